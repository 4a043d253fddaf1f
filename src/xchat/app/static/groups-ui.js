// Groups: create one, the members dialog (admins add, remove, rename).
import { get, post } from './api.js';
import { $, announce, el, plural, shortAddr, show } from './dom.js';
import { memberName, on, state } from './state.js';
import {
  openConversation, refreshConversations, refreshSoon, renderConversations, renderHeader,
} from './conversations.js';

function splitMembers(text) {
  return text.split(/[\s,]+/).map((m) => m.trim()).filter(Boolean);
}

$('btn-newgroup').addEventListener('click', () => {
  $('group-error').textContent = '';
  $('form-group').reset();
  $('dlg-group').showModal();
  $('group-name').focus();
});
$('btn-group-cancel').addEventListener('click', () => $('dlg-group').close());
$('form-group').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('group-name').value.trim();
  const members = splitMembers($('group-members').value);
  if (!name) { $('group-error').textContent = 'Give the group a name.'; $('group-name').focus(); return; }
  if (!members.length) { $('group-error').textContent = 'Add at least one member by @handle.'; $('group-members').focus(); return; }
  const btn = $('btn-group-create');
  btn.disabled = true;
  $('group-error').textContent = '';
  try {
    const r = await post('/api/groups/create', { name, members });
    $('dlg-group').close();
    announce(`Group ${name} created`);
    await refreshConversations();
    await openConversation(r.group.conv);
  } catch (err) {
    $('group-error').textContent = err.status === 404 ? `${err.message}. Check the @handles.` : err.message;
  } finally {
    btn.disabled = false;
  }
});

function renderMembers(g) {
  state.group = g;
  const admin = g.admin && !g.left;
  $('members-title').textContent = `${g.name}: ${plural(g.members.length, 'member')}`;
  $('members-note').textContent = g.left
    ? 'You are no longer a member of this group.'
    : admin ? 'You are an admin: you can add and remove members and rename the group.'
      : 'Only admins can add or remove members or rename the group.';
  $('members-list').replaceChildren(...g.members.map((m) => el('li', { 'data-address': m.address },
    el('span', { class: 'member-name' },
      el('span', { text: memberName(m) }),
      el('span', { class: 'mono small muted member-addr', text: shortAddr(m.address) })),
    el('span', { class: 'row' },
      m.admin ? el('span', { class: 'badge admin', text: 'Admin' }) : null,
      admin && !m.me ? el('button', {
        type: 'button', class: 'small-btn danger', 'aria-label': `Remove ${memberName(m)}`,
        onclick: (e) => confirmRemove(m, e.currentTarget),
      }, 'Remove') : null))));
  show($('members-admin'), admin);
  $('rename-input').value = g.name;
  renderHeader();
}

async function openMembers() {
  if (!state.group) return;
  if (!$('dlg-members').open) { $('members-error').textContent = ''; $('members-add').value = ''; }
  try {
    const r = await get(`/api/groups/info?group=${encodeURIComponent(state.group.id)}`);
    renderMembers(r.group);
  } catch (err) { $('composer-error').textContent = err.message; return; }
  if (!$('dlg-members').open) $('dlg-members').showModal();
}

// Removing someone re-keys the group for everyone left (seconds with many members): ask
// first, show the work in progress, and update every count the moment it is done.
function confirmRemove(m, button) {
  const dlg = $('dlg-confirm');
  $('confirm-text').textContent = `Remove ${memberName(m)} from ${state.group.name}? They stop receiving new messages; the group gets new keys.`;
  $('btn-confirm-ok').textContent = 'Remove';
  dlg.returnValue = '';
  dlg.onclose = () => {
    dlg.onclose = null;
    if (dlg.returnValue !== 'ok') { button.focus(); return; }
    button.disabled = true;
    button.textContent = 'Removing…';
    button.setAttribute('aria-busy', 'true');
    $('members-list').setAttribute('aria-busy', 'true');
    changeMembers({ remove: [m.address] }, `${memberName(m)} removed`).finally(() => {
      $('members-list').removeAttribute('aria-busy');
      if (button.isConnected) { button.disabled = false; button.textContent = 'Remove'; button.removeAttribute('aria-busy'); }
    });
  };
  dlg.showModal();
  $('btn-confirm-cancel').focus();
}
$('btn-confirm-ok').addEventListener('click', () => $('dlg-confirm').close('ok'));
$('btn-confirm-cancel').addEventListener('click', () => $('dlg-confirm').close('cancel'));

async function changeMembers(body, done) {
  $('members-error').textContent = '';
  const g = state.group;
  try {
    const r = await post('/api/groups/members', { group: g.id, ...body });
    renderMembers(r.group);
    const entry = state.convs.find((c) => c.conv === r.group.conv);
    if (entry) { entry.members = r.group.members; renderConversations(); }
    announce(done);
    refreshConversations();
  } catch (err) { $('members-error').textContent = err.message; }
}

$('btn-members').addEventListener('click', openMembers);
$('btn-members-close').addEventListener('click', () => $('dlg-members').close());
$('form-members-add').addEventListener('submit', async (e) => {
  e.preventDefault();
  const add = splitMembers($('members-add').value);
  if (!add.length) { $('members-add').focus(); return; }
  await changeMembers({ add }, `Added ${add.join(', ')}`);
  if (!$('members-error').textContent) $('members-add').value = '';
});
$('form-rename').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('rename-input').value.trim();
  if (!name || !state.group || name === state.group.name) return;
  $('members-error').textContent = '';
  try {
    const r = await post('/api/groups/rename', { group: state.group.id, name });
    renderMembers(r.group);
    announce(`Group renamed to ${name}`);
    refreshSoon();
  } catch (err) { $('members-error').textContent = err.message; }
});

on('event:group', (ev) => {
  if (ev.conv === state.current && $('dlg-members').open) openMembers();
});
