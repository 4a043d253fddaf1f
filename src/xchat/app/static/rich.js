// Rich messaging (PROTOCOL.md Part VIII): the message menu (reply, react, edit, delete,
// info with receipts), quoted replies, reaction chips, "edited"/"deleted" marks, read
// ticks, the typing indicator, the disappearing timer in the header, the Requests folder,
// block/unblock, leave group, search, and the two privacy switches in Settings.
// Everything a peer wrote — quotes, reactions, edits, names — goes into the DOM with
// textContent only (el() never parses markup).
import { get, post } from './api.js';
import { $, alertText, announce, el, fmtFull, fmtTime, shortAddr, show } from './dom.js';
import { displayName, emit, isGroup, on, state } from './state.js';
import { loadMessages, openConversation, refreshConversations, refreshSoon, renderMessages } from './conversations.js';

document.head.append(el('link', { rel: 'stylesheet', href: '/static/rich.css' }));

const EMOJI = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const TIMERS = [[0, 'Off'], [30, '30 seconds'], [300, '5 minutes'], [3600, '1 hour'], [28800, '8 hours'],
  [86400, '1 day'], [604800, '1 week'], [2419200, '4 weeks']];
const TYPING_TTL = 15000;
const TYPING_REPEAT = 5000;

const rich = {
  conv: null,
  data: null,          // /api/rich/conversation answer for rich.conv
  reply: null,         // {id, author, text, name}
  editing: null,       // {id, text}
  typing: new Map(),   // sender -> timeout id
  requests: [],
  blocked: [],
  menu: null,
  menuId: null,        // the message whose menu is open (kept across re-renders)
};

function nameOf(address, handle, mine) {
  if (mine) return 'You';
  if (handle) return `@${handle}`;
  if (state.contact && state.contact.address === address) return displayName(state.contact);
  return shortAddr(address);
}
const info = (id) => (rich.data && rich.data.messages && rich.data.messages[id]) || null;

// --- data ----------------------------------------------------------------------------------

async function fetchRich(conv) {
  if (!conv) return;
  let r;
  try { r = await get(`/api/rich/conversation?peer=${encodeURIComponent(conv)}`); } catch (e) { return; }
  if (state.current !== conv) return;
  rich.conv = conv;
  rich.data = r;
  renderHeaderExtras();
  renderMessages(false);
  renderNotices();  // also when the list itself did not change (no messages yet)
}

async function refreshRequests() {
  try {
    const r = await get('/api/rich/requests');
    rich.requests = r.requests;
    rich.blocked = r.blocked;
  } catch (e) { return; }
  renderRequests();
  hideRequestConvs();
}

async function markRead(conv) {
  if (!conv || document.visibilityState !== 'visible') return;
  try { await post('/api/rich/read', { conv }); } catch (e) { /* offline: next time */ }
}

// --- sidebar: search box and Requests folder --------------------------------------------------

const searchForm = el('form', { id: 'form-search', class: 'rich-search', role: 'search', novalidate: true },
  el('label', { for: 'search-input', class: 'sr-only', text: 'Search messages' }),
  el('input', { id: 'search-input', type: 'search', placeholder: 'Search messages', autocomplete: 'off', spellcheck: 'false' }));
const searchResults = el('ul', { id: 'search-results', class: 'search-results', 'aria-label': 'Search results', hidden: true });
const requestsBtn = el('button', { type: 'button', id: 'btn-requests', class: 'requests-btn', hidden: true, 'aria-expanded': 'false' });
const requestsList = el('ul', { id: 'requests-list', class: 'requests-list', 'aria-label': 'Message requests', hidden: true });
$('conv-list-title').before(searchForm, searchResults, requestsBtn, requestsList);

let searchTimer = null;
$('search-input').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 200);
});
searchForm.addEventListener('submit', (e) => { e.preventDefault(); runSearch(); });

async function runSearch() {
  const q = $('search-input').value.trim();
  if (!q) { show(searchResults, false); searchResults.replaceChildren(); return; }
  let r;
  try { r = await get(`/api/rich/search?q=${encodeURIComponent(q)}`); } catch (e) { return; }
  show(searchResults, true);
  if (!r.results.length) {
    searchResults.replaceChildren(el('li', { class: 'muted pad', text: 'No messages found' }));
    return;
  }
  searchResults.replaceChildren(...r.results.map((h) => {
    const conv = state.convs.find((c) => c.conv === h.conv);
    const where = conv ? (conv.kind === 'group' ? conv.name : displayName(conv)) : shortAddr(h.conv);
    return el('li', {}, el('button', {
      type: 'button', class: 'search-hit', 'data-id': h.id,
      onclick: () => jumpTo(h.conv, h.id),
    },
    el('span', { class: 'hit-where', text: `${where} · ${nameOf(h.author, h.handle, h.mine)}` }),
    el('span', { class: 'hit-time', text: fmtTime(h.ts_ms) }),
    el('span', { class: 'hit-text', text: h.text })));
  }));
}

async function jumpTo(conv, id) {
  await openConversation(conv);
  const li = document.querySelector(`#messages li[data-id="${CSS.escape(id)}"]`);
  if (li) {
    li.scrollIntoView({ block: 'center' });
    li.classList.add('flash');
    setTimeout(() => li.classList.remove('flash'), 2000);
  }
}

requestsBtn.addEventListener('click', () => {
  const open = requestsList.hidden;
  show(requestsList, open);
  requestsBtn.setAttribute('aria-expanded', String(open));
});

function renderRequests() {
  const n = rich.requests.length;
  show(requestsBtn, n > 0);
  requestsBtn.textContent = `Requests (${n})`;
  if (!n) show(requestsList, false);
  requestsList.replaceChildren(...rich.requests.map((r) => {
    const name = r.handle ? `@${r.handle}` : shortAddr(r.address);
    return el('li', { class: 'request-item', 'data-conv': r.conv },
      el('button', { type: 'button', class: 'request-open', onclick: () => openConversation(r.conv) },
        el('span', { class: 'conv-name', text: name }),
        el('span', { class: 'conv-last', text: r.last_text || '' })),
      requestActions(r.conv));
  }));
}

function requestActions(conv) {
  return el('span', { class: 'row request-actions' },
    el('button', { type: 'button', class: 'small-btn primary', onclick: () => acceptRequest(conv) }, 'Accept'),
    el('button', { type: 'button', class: 'small-btn', onclick: () => blockConv(conv, true) }, 'Block'),
    el('button', { type: 'button', class: 'small-btn', onclick: () => deleteRequest(conv) }, 'Delete'));
}

async function acceptRequest(conv) {
  try { await post('/api/rich/accept', { conv }); } catch (e) { alertText(e.message); return; }
  await refreshRequests();
  await refreshConversations();
  if (state.current === conv) { fetchRich(conv); markRead(conv); }
}

async function deleteRequest(conv) {
  try { await post('/api/rich/requests/delete', { conv }); } catch (e) { alertText(e.message); return; }
  if (state.current === conv) $('btn-back').click();
  await refreshRequests();
  await refreshConversations();
}

async function blockConv(conv, block) {
  try { await post('/api/rich/block', { conv, unblock: !block }); } catch (e) { alertText(e.message); return; }
  announce(block ? 'Blocked' : 'Unblocked');
  await refreshRequests();
  await refreshConversations();
  if (state.current === conv) fetchRich(conv);
}

// A request is not in the inbox: hide it from the conversation list (the folder has it).
function hideRequestConvs() {
  const req = new Set(rich.requests.map((r) => r.conv));
  for (const item of document.querySelectorAll('#conv-list .conv-item')) {
    const li = item.closest('li');
    if (li) li.hidden = req.has(item.dataset.conv);
  }
}
on('conversations-rendered', hideRequestConvs);

// --- conversation header: timer, block, leave, request banner, typing ---------------------------

const header = document.querySelector('#conv-active .conv-header');
const timerSel = el('select', { id: 'rich-timer', class: 'timer-select', 'aria-label': 'Disappearing messages' },
  ...TIMERS.map(([s, label]) => el('option', { value: String(s), text: `⏱ ${label}` })));
const blockBtn = el('button', { type: 'button', id: 'btn-block', class: 'small-btn' }, 'Block');
const leaveBtn = el('button', { type: 'button', id: 'btn-leave', class: 'small-btn', hidden: true }, 'Leave');
$('btn-safety').before(timerSel);
header.append(blockBtn, leaveBtn);
const banner = el('div', { id: 'request-banner', class: 'warning request-banner', role: 'region', 'aria-label': 'Message request', hidden: true });
const blockedBanner = el('div', { id: 'blocked-banner', class: 'notice', hidden: true });
$('identity-warning').after(banner, blockedBanner);
const typingLine = el('p', { id: 'typing-indicator', class: 'typing muted small pad', 'aria-live': 'polite' });
const replyBar = el('div', { id: 'reply-bar', class: 'reply-bar', hidden: true });
$('composer').before(typingLine, replyBar);

timerSel.addEventListener('change', async () => {
  const conv = state.current;
  const seconds = Number(timerSel.value) || null;
  try { await post('/api/rich/timer', { conv, seconds }); } catch (e) { alertText(e.message); }
  fetchRich(conv);
});
blockBtn.addEventListener('click', () => {
  const blocked = rich.data && rich.data.state === 'blocked';
  blockConv(state.current, !blocked);
});
leaveBtn.addEventListener('click', async () => {
  const conv = state.current;
  if (!window.confirm('Leave this group? The others will see that you left.')) return;
  try { await post('/api/rich/leave', { conv }); } catch (e) { alertText(e.message); return; }
  await loadMessages(false);
  refreshConversations();
});

function renderHeaderExtras() {
  const d = rich.data;
  if (!d || d.conv !== state.current) return;
  const group = isGroup(d.conv);
  const blocked = d.state === 'blocked';
  timerSel.value = String(d.timer || 0);
  if (timerSel.value === '') timerSel.append(el('option', { value: String(d.timer), text: `⏱ ${d.timer} s` }));
  timerSel.value = String(d.timer || 0);
  timerSel.title = d.timer ? `Messages disappear ${TIMERS.find(([s]) => s === d.timer)?.[1] || `${d.timer} s`} after they are read` : 'Disappearing messages: off';
  timerSel.disabled = blocked || Boolean(state.group && state.group.left);
  show(blockBtn, !group);
  blockBtn.textContent = blocked ? 'Unblock' : 'Block';
  show(leaveBtn, group && !(state.group && state.group.left));
  const isRequest = d.state === 'request';
  show(banner, isRequest);
  if (isRequest) {
    banner.replaceChildren(el('p', { text: `${displayName(state.contact)} is not in your contacts. They will not know you read their messages until you accept.` }),
      requestActions(d.conv));
  }
  show(blockedBanner, blocked);
  blockedBanner.textContent = blocked ? `You blocked ${displayName(state.contact)}: their messages are dropped. Unblock to talk again.` : '';
  $('composer-input').disabled = blocked || Boolean(state.group && state.group.left);
  $('btn-send').disabled = $('composer-input').disabled;
}

function showTyping() {
  const names = [...rich.typing.keys()].map((a) => {
    const m = state.group && state.group.members.find((x) => x.address === a);
    return m && m.handle ? `@${m.handle}` : (state.contact && state.contact.address === a ? displayName(state.contact) : shortAddr(a));
  });
  typingLine.textContent = names.length ? `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…` : '';
}

// --- composer: reply and edit modes, typing indicators -------------------------------------------

function setReply(m) {
  rich.editing = null;
  const d = info(m.id);
  rich.reply = { id: m.id, text: m.text || (m.file && m.file.name) || '', name: m.direction === 'out' ? 'You' : nameOf(m.sender, m.sender_handle, false) };
  replyBar.replaceChildren(el('span', { class: 'reply-label', text: `Replying to ${rich.reply.name}: ` }),
    el('span', { class: 'reply-text', text: rich.reply.text }),
    el('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Cancel reply', onclick: clearModes }, '✕'));
  show(replyBar, true);
  if (d && d.deleted) clearModes();
  $('composer-input').focus();
}

function setEdit(m) {
  rich.reply = null;
  rich.editing = { id: m.id, before: $('composer-input').value };
  replyBar.replaceChildren(el('span', { class: 'reply-label', text: 'Editing your message' }),
    el('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Cancel edit', onclick: () => { $('composer-input').value = rich.editing ? rich.editing.before : ''; clearModes(); } }, '✕'));
  show(replyBar, true);
  $('composer-input').value = m.text || '';
  $('composer-input').focus();
}

function clearModes() {
  rich.reply = null;
  rich.editing = null;
  replyBar.replaceChildren();
  show(replyBar, false);
}
on('conversation-switch', () => { clearModes(); rich.typing.clear(); showTyping(); rich.data = null; stopTyping(); });

// Capture phase on the document: runs before compose.js's own submit handler, which then
// never sees a reply or an edit.
document.addEventListener('submit', async (e) => {
  if (e.target.id !== 'composer' || (!rich.reply && !rich.editing)) return;
  e.preventDefault();
  e.stopPropagation();
  const input = $('composer-input');
  const text = input.value;
  const conv = state.current;
  if (!text.trim() || !conv) return;
  $('composer-error').textContent = '';
  const mode = rich.editing ? { kind: 'edit', id: rich.editing.id } : { kind: 'reply', id: rich.reply.id };
  input.value = '';
  clearModes();
  stopTyping();
  try {
    if (mode.kind === 'edit') await post('/api/rich/edit', { conv, id: mode.id, text });
    else await post('/api/rich/send', { conv, text, reply_to: mode.id });
  } catch (err) {
    input.value = text;
    $('composer-error').textContent = `Not sent: ${err.message}`;
    return;
  }
  await loadMessages(true);
  fetchRich(conv);
  refreshSoon();
}, true);

let typingSent = 0;
let typingStop = null;
$('composer-input').addEventListener('input', () => {
  const conv = state.current;
  if (!conv || !rich.data || !rich.data.typing || rich.data.state === 'request') return;
  const now = Date.now();
  if (now - typingSent > TYPING_REPEAT) {
    typingSent = now;
    post('/api/rich/typing', { conv, started: true }).catch(() => {});
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(stopTyping, 5000);
});
function stopTyping() {
  clearTimeout(typingStop);
  if (typingSent && state.current) post('/api/rich/typing', { conv: state.current, started: false }).catch(() => {});
  typingSent = 0;
}
$('composer').addEventListener('submit', () => { if (typingSent) stopTyping(); });

// --- messages: decorations and the menu ---------------------------------------------------------

on('message-rendered', (li, m) => {
  if (!m.id || (m.kind !== 'text' && m.kind !== 'file')) return;
  const d = info(m.id);
  const bubble = li.querySelector('.bubble');
  if (d && d.deleted) {
    li.classList.add('deleted');
    if (bubble) bubble.replaceWith(el('div', { class: 'bubble muted deleted-mark', text: m.direction === 'out' ? 'You deleted this message' : 'This message was deleted' }));
  } else if (d && d.quote && bubble) {
    const q = d.quote;
    const who = q.author ? nameOf(q.author, q.handle, q.mine) : 'Unknown';
    const mark = { forged: '⚠ forged quote', missing: 'original not available', deleted: 'deleted message' }[q.status];
    const quote = el('div', { class: `quote quote-${q.status}`, 'data-status': q.status, role: 'note' },
      el('span', { class: 'quote-author', text: who }),
      el('span', { class: 'quote-text', text: q.status === 'deleted' ? 'This message was deleted' : (q.text || '') }),
      mark ? el('span', { class: 'quote-mark', text: mark }) : null,
      q.status === 'forged' && q.claimed ? el('span', { class: 'quote-claimed', text: `claimed: ${q.claimed.text}` }) : null);
    quote.addEventListener('click', () => jumpTo(m.conv, q.id));
    bubble.prepend(quote);
  }
  const meta = li.querySelector('.meta');
  if (d && !d.deleted && d.reactions && d.reactions.length) {
    const me = state.account && state.account.address;
    li.querySelector('.meta').before(el('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' },
      ...d.reactions.map((r) => {
        const mine = r.by.includes(me);
        return el('button', {
          type: 'button', class: `reaction-chip${mine ? ' mine' : ''}`, 'aria-pressed': String(mine),
          title: r.by.map((a) => (a === me ? 'You' : nameOf(a, null, false))).join(', '),
          onclick: () => react(m, r.emoji, mine),
        }, el('span', { class: 'emoji', text: r.emoji }), el('span', { class: 'count', text: String(r.count) }));
      })));
  }
  if (meta && d) {
    if (d.edited && !d.deleted) {
      meta.prepend(el('button', { type: 'button', class: 'edited-mark link-btn', onclick: () => showInfo(m) }, 'edited'), ' ');
    }
    if (d.expires_at) {
      meta.append(el('span', { class: 'expires', title: `Disappears ${fmtFull(d.expires_at)}`, text: ` · ⏱ ${remaining(d.expires_at)}` }));
    } else if (d.timer) {
      meta.append(el('span', { class: 'expires', title: 'Disappears after it is read', text: ' · ⏱' }));
    }
    const status = meta.querySelector('.status');
    if (m.direction === 'out' && status) {
      if (d.receipts) {
        const r = d.receipts;
        const label = r.read ? `Read by ${r.read} of ${r.members}` : `Delivered to ${r.delivered} of ${r.members}`;
        if (r.delivered || r.read) status.textContent = ` · ${label}`;
        status.dataset.read = String(r.read >= r.members && r.members > 0);
      } else if (d.read) {
        status.textContent = ' · Read ✓✓';
        status.dataset.read = 'true';
      }
    }
  }
  const actions = el('button', { type: 'button', class: 'msg-menu-btn', 'aria-label': 'Message actions', 'aria-haspopup': 'menu', onclick: (e) => { e.stopPropagation(); openMenu(li, m); } }, '⋯');
  li.append(actions);
  li.addEventListener('contextmenu', (e) => { e.preventDefault(); openMenu(li, m); });
  // a re-render (a receipt, a reaction arriving) must not close a menu the user opened
  if (rich.menuId === m.id) openMenu(li, m, false);
});

function remaining(at) {
  const s = Math.max(0, Math.round((at - Date.now()) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86400) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function closeMenu() {
  if (rich.menu) { rich.menu.remove(); rich.menu = null; }
  rich.menuId = null;
}
document.addEventListener('click', (e) => { if (rich.menu && !rich.menu.contains(e.target)) closeMenu(); });
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeMenu(); });

function openMenu(li, m, focus = true) {
  if (rich.menu) rich.menu.remove();
  rich.menu = null;
  rich.menuId = m.id;
  const d = info(m.id) || {};
  const mine = m.direction === 'out';
  const item = (label, fn, cls) => el('button', { type: 'button', role: 'menuitem', class: cls || null, onclick: () => { closeMenu(); fn(); } }, label);
  const blocked = rich.data && rich.data.state === 'blocked';
  const menu = el('div', { class: 'msg-menu', role: 'menu', 'aria-label': 'Message actions' },
    d.deleted || blocked ? null : el('div', { class: 'emoji-row', role: 'group', 'aria-label': 'React' },
      ...EMOJI.map((e) => el('button', { type: 'button', role: 'menuitem', class: 'emoji-btn', 'aria-label': `React ${e}`, onclick: () => { closeMenu(); react(m, e, false); } }, e))),
    d.deleted || blocked ? null : item('Reply', () => setReply(m), 'menu-reply'),
    mine && !d.deleted && m.kind === 'text' ? item('Edit', () => setEdit(m), 'menu-edit') : null,
    item('Delete for me', () => del(m, false), 'menu-delete-me'),
    mine && !d.deleted ? item('Delete for everyone', () => del(m, true), 'menu-delete-all') : null,
    item('Info', () => showInfo(m), 'menu-info'));
  li.append(menu);
  rich.menu = menu;
  const first = menu.querySelector('button');
  if (first && focus) first.focus();
}

async function react(m, emoji, remove) {
  const d = info(m.id);
  const me = state.account && state.account.address;
  const already = d && d.reactions && d.reactions.find((r) => r.emoji === emoji && r.by.includes(me));
  try {
    await post('/api/rich/react', { conv: m.conv, id: m.id, emoji, remove: remove || Boolean(already) });
  } catch (e) { alertText(e.message); return; }
  fetchRich(m.conv);
}

async function del(m, everyone) {
  if (everyone && !window.confirm('Delete this message for everyone?')) return;
  try { await post('/api/rich/delete', { conv: m.conv, id: m.id, for_everyone: everyone }); } catch (e) { alertText(e.message); return; }
  await loadMessages(false);
  fetchRich(m.conv);
  refreshSoon();
}

// The Info dialog: receipts per member, earlier versions.
const dlg = el('dialog', { id: 'dlg-info', 'aria-labelledby': 'info-title' },
  el('h2', { id: 'info-title', text: 'Message info' }),
  el('div', { id: 'info-body' }),
  el('div', { class: 'row' }, el('button', { type: 'button', id: 'btn-info-close', onclick: () => dlg.close() }, 'Close')));
document.body.append(dlg);

async function showInfo(m) {
  let r;
  try { r = await get(`/api/rich/info?peer=${encodeURIComponent(m.conv)}&id=${encodeURIComponent(m.id)}`); } catch (e) { alertText(e.message); return; }
  const body = [];
  body.push(el('p', { class: 'small muted', text: `Sent ${fmtFull(m.ts_ms)}` }));
  if (m.direction === 'out') {
    if (!r.receipts.length) body.push(el('p', { text: isGroup(m.conv) ? 'No member has confirmed it yet.' : 'Not delivered yet.' }));
    body.push(el('ul', { class: 'receipt-list' }, ...r.receipts.map((x) => el('li', {},
      el('span', { class: 'who', text: x.handle ? `@${x.handle}` : shortAddr(x.member) }),
      el('span', { class: 'what', text: x.read_ms ? ` read ${fmtFull(x.read_ms)}` : (x.delivered_ms ? ` delivered ${fmtFull(x.delivered_ms)}` : '') })))));
  }
  if (r.versions && r.versions.length) {
    body.push(el('h3', { text: 'Earlier versions' }));
    body.push(el('ol', { class: 'versions' }, ...r.versions.map((v) => el('li', {},
      el('span', { class: 'small muted', text: `${fmtFull(v.ts)}: ` }), el('span', { class: 'version-text', text: v.text })))));
  }
  $('info-body').replaceChildren(...body);
  dlg.showModal();
}

// Notices (timer changes, group changes) as lines in the message list, by time.
const box = $('messages');
// Re-place the notices whenever conversations.js re-renders the list; our own insertions
// happen while disconnected, so they never trigger the observer again.
function renderNotices() {
  if (!rich.data || rich.data.conv !== state.current) return;
  observer.disconnect();
  try { placeNotices(); } finally { observer.observe(box, { childList: true }); }
}
const observer = new MutationObserver(renderNotices);
observer.observe(box, { childList: true });

function placeNotices() {
  for (const n of box.querySelectorAll('li.notice-line')) n.remove();
  const notices = (rich.data && rich.data.notices) || [];
  const msgs = [...box.querySelectorAll('li.msg')];
  for (const n of notices) {
    const line = el('li', { class: 'notice-line', 'data-kind': n.kind || n.type, text: n.text || '' });
    const next = msgs.find((li) => {
      const t = li.querySelector('time');
      return t && Date.parse(t.getAttribute('datetime')) > n.ts;
    });
    if (next) box.insertBefore(line, next); else box.append(line);
  }
}

// --- settings: read receipts and typing ----------------------------------------------------------

const settingsDlg = $('dlg-settings');
const privacy = el('fieldset', { class: 'privacy', id: 'privacy-settings' },
  el('legend', { text: 'Privacy' }),
  el('label', {}, el('input', { type: 'checkbox', id: 'set-read-receipts' }), ' Send read receipts (off: you also see none)'),
  el('label', {}, el('input', { type: 'checkbox', id: 'set-typing' }), ' Typing indicators (off: you also see none)'));
const closeRow = settingsDlg.querySelector('.row:last-child') || null;
if (closeRow) closeRow.before(privacy); else settingsDlg.append(privacy);
for (const [id, key] of [['set-read-receipts', 'read_receipts'], ['set-typing', 'typing']]) {
  $(id).addEventListener('change', async () => {
    try { await post('/api/rich/settings', { [key]: $(id).checked }); } catch (e) { alertText(e.message); }
    if (state.current) fetchRich(state.current);
  });
}
async function loadPrivacy() {
  try {
    const s = await get('/api/rich/settings');
    $('set-read-receipts').checked = s.read_receipts;
    $('set-typing').checked = s.typing;
  } catch (e) { /* shown as unchecked */ }
}
$('btn-settings').addEventListener('click', loadPrivacy);
// the account's settings: switched on another of our devices, switched here (Part VII §5)
on('event:device_sync', (ev) => { if (ev.kind === 'settings' && $('dlg-settings').open) loadPrivacy(); });

// --- life cycle and live events ------------------------------------------------------------------

on('app-entered', refreshRequests);
on('conversation-opened', (conv) => {
  fetchRich(conv).then(() => { if (!rich.data || rich.data.state !== 'request') markRead(conv); });
});
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.current) markRead(state.current);
});
on('event:message', (ev) => {
  if (ev.conv === state.current) {
    fetchRich(ev.conv).then(() => { if (rich.data && rich.data.state !== 'request') markRead(ev.conv); });
    rich.typing.delete(ev.peer);
    showTyping();
  }
  if (!ev.group) refreshRequests();
});
on('event:rich', (ev) => {
  if (ev.kind === 'typing') {
    if (ev.conv !== state.current) return;
    clearTimeout(rich.typing.get(ev.peer));
    if (ev.started) rich.typing.set(ev.peer, setTimeout(() => { rich.typing.delete(ev.peer); showTyping(); }, TYPING_TTL));
    else rich.typing.delete(ev.peer);
    showTyping();
    return;
  }
  if (ev.kind === 'request') { refreshRequests(); return; }
  if (ev.conv === state.current) {
    if (ev.kind === 'edit' || ev.kind === 'delete' || ev.kind === 'expired') loadMessages(false).then(() => fetchRich(ev.conv));
    else fetchRich(ev.conv);
  }
  if (ev.kind === 'notice') announce(ev.text);
  if (ev.kind === 'expired' || ev.kind === 'delete' || ev.kind === 'edit') refreshSoon();
});
on('event:group', (ev) => { if (ev.conv === state.current) fetchRich(ev.conv); });
// keep the countdowns moving
setInterval(() => {
  if (state.current && rich.data && Object.values(rich.data.messages || {}).some((d) => d.expires_at)) renderMessages(false);
}, 5000);

emit('rich-ready');
