// The main view: the conversation list, the open conversation (header and messages), the
// connection status, and the live events that refresh them.
import { get, post } from './api.js';
import { $, alertText, announce, el, fmtFull, fmtTime, linkify, plural, shortAddr, show, showOnly } from './dom.js';
import {
  convName, displayName, emit, isGroup, memberName, on, preview, renderers, senderName, state,
} from './state.js';
import { renderWhoami } from './settings.js';

export function enterApp() {
  showOnly('view-app');
  show($('restore-note'), state.restored);
  renderWhoami();
  refreshConversations();
  $('newchat-input').focus();
  emit('app-entered');
}

// Three different troubles, told apart: the relay is unreachable (the app process keeps
// messages in its outbox and reconnects), another copy of the account took the connection
// (no automatic reconnect: the two copies would take it from each other forever), and the
// app process itself stopped (nothing works until it is started again).
export function setConn(connected, displaced) {
  const c = $('conn-status');
  const here = $('btn-use-here');
  show(here, Boolean(displaced));
  if (displaced) {
    c.dataset.state = 'displaced';
    c.textContent = displaced;
  } else if (connected === true) { c.dataset.state = 'online'; c.textContent = 'Connected'; }
  else if (connected === false) { c.dataset.state = 'offline'; c.textContent = 'Relay unreachable — reconnecting; messages wait to be sent'; }
  else { c.dataset.state = 'connecting'; c.textContent = 'Connecting to the relay…'; }
}

/** The event stream broke: is the app process gone, or was it a blip? */
async function checkApp() {
  try {
    await get('/api/state');
  } catch (e) {
    if (e.status === 0) {
      const c = $('conn-status');
      c.dataset.state = 'app-down';
      c.textContent = 'The XChat app stopped: start it again (make run, or xchat app), then reload this page';
      show($('btn-use-here'), false);
    }
  }
}

// A list answer applies only if nothing newer happened since it was asked for: neither a
// newer request (answers can cross) nor a read mark here (an answer computed before the mark
// would bring the unread count, title and favicon back after the user read the messages).
let listGen = 0;

export async function refreshConversations() {
  const gen = ++listGen;
  let r;
  try { r = await get('/api/conversations'); } catch (e) { return; }
  if (gen !== listGen) return;
  state.convs = r.conversations;
  renderConversations();
}

export const refreshSoon = (() => {
  let t = null;
  return () => { if (t) return; t = setTimeout(() => { t = null; refreshConversations(); }, 150); };
})();

export function renderConversations() {
  const list = $('conv-list');
  show($('conv-list-empty'), state.convs.length === 0);
  list.replaceChildren(...state.convs.map((c) => {
    const name = convName(c);
    const last = c.last;
    const kind = c.kind === 'group' ? `group with ${plural(c.members.length, 'member')}` : '';
    const label = [name, kind, c.unread ? `${c.unread} unread` : '', last ? `last message: ${preview(last)}` : '']
      .filter(Boolean).join(', ');
    const btn = el('button', {
      type: 'button', class: `conv-item ${c.kind}`, 'data-conv': c.conv,
      'aria-current': c.conv === state.current ? 'true' : null, 'aria-label': label,
      onclick: () => openConversation(c.conv),
    },
    el('span', { class: 'conv-name' },
      c.kind === 'group' ? el('span', { class: 'group-icon', 'aria-hidden': 'true', text: '#' }) : null,
      name),
    el('span', { class: 'conv-time', text: last ? fmtTime(last.ts_ms) : '' }),
    el('span', { class: 'conv-last', text: c.left ? 'You are no longer a member' : preview(last) }),
    c.unread ? el('span', { class: 'unread', text: String(c.unread), 'aria-hidden': 'true' }) : el('span'));
    return el('li', {}, btn);
  }));
  emit('conversations-rendered', state.convs);
}

$('form-newchat').addEventListener('submit', async (e) => {
  e.preventDefault();
  const to = $('newchat-input').value.trim();
  $('newchat-error').textContent = '';
  if (!to) { $('newchat-input').focus(); return; }
  try {
    const r = await post('/api/contacts/resolve', { to });
    $('newchat-input').value = '';
    await refreshConversations();
    await openConversation(r.contact.address);
  } catch (err) {
    $('newchat-error').textContent = err.status === 404 ? `No account found for ${to}.` : err.message;
  }
});

export async function openConversation(conv) {
  if (conv !== state.current) {
    emit('conversation-switch', state.current, conv);
    state.messages = [];
    $('messages').replaceChildren();
  }
  state.current = conv;
  $('view-app').classList.add('show-conv');
  show($('conv-empty'), false);
  show($('conv-active'), true);
  $('composer-error').textContent = '';
  renderConversations();
  await loadMessages(true);
  $('composer-input').focus();
  emit('conversation-opened', conv);
}

$('btn-back').addEventListener('click', () => {
  $('view-app').classList.remove('show-conv');
  const conv = state.current || '';
  emit('conversation-switch', state.current, null);
  state.current = null;
  renderConversations();
  (document.querySelector(`.conv-item[data-conv="${CSS.escape(conv)}"]`) || $('newchat-input')).focus();
});

let loadGen = 0;
export async function loadMessages(scrollToEnd) {
  const conv = state.current;
  if (!conv) return;
  const gen = ++loadGen;  // only the newest request may render (responses can cross)
  let r;
  try { r = await get(`/api/messages?peer=${encodeURIComponent(conv)}`); } catch (e) {
    $('composer-error').textContent = e.message; return;
  }
  if (state.current !== conv || gen !== loadGen) return;
  state.contact = r.contact || null;
  state.group = r.group || null;
  state.messages = r.messages;
  renderHeader();
  renderMessages(scrollToEnd);
  const last = r.messages[r.messages.length - 1];
  const entry = state.convs.find((c) => c.conv === conv);
  if (last && last.direction === 'in' && document.visibilityState === 'visible') {
    await post('/api/conversations/read', { peer: conv }).catch(() => {});
    listGen++;  // drop any list answer still in flight (see refreshConversations) ...
    if (entry && entry.unread) { entry.unread = 0; renderConversations(); }
    refreshSoon();  // ... and ask again, after the mark
  }
}

export function renderHeader() {
  const c = state.contact;
  const g = state.group;
  show($('btn-safety'), Boolean(c));
  show($('btn-members'), Boolean(g));
  show($('conv-verified'), Boolean(c && c.verified && !c.identity_changed));
  $('composer-input').disabled = Boolean(g && g.left);
  $('btn-send').disabled = Boolean(g && g.left);
  $('btn-attach').disabled = Boolean(g && g.left);
  $('conv-subtitle').classList.toggle('mono', !g);
  $('conv-subtitle').classList.toggle('group', Boolean(g));
  if (g) {
    $('conv-title').textContent = g.name;
    $('conv-subtitle').textContent = g.left
      ? 'You are no longer a member of this group'
      : `${plural(g.members.length, 'member')}: ${g.members.map(memberName).join(', ')}`;
    show($('identity-warning'), false);
    return;
  }
  $('conv-title').textContent = displayName(c);
  $('conv-subtitle').textContent = c.address;
  const warn = $('identity-warning');
  if (c.identity_changed) {
    $('identity-warning-text').textContent = c.verified
      ? `The safety number with ${displayName(c)} has changed. Sending is blocked until you compare the new number and verify again.`
      : `The safety number with ${displayName(c)} has changed. This can mean they reinstalled XChat — or that someone is intercepting. Compare the new number.`;
    show(warn, true);
  } else {
    show(warn, false);
  }
}

function statusLabel(s) {
  return {
    sending: '◷ Sending…', pending: '◷ Waiting to send', sent: 'Sent ✓', delivered: 'Delivered ✓✓',
    received: '', failed: 'Not sent',
  }[s] ?? s;
}

// Stick to the newest message while the user has not scrolled up: content that grows later
// (an image decoding, a preview arriving) must not leave the view above the end.
// Only the user's own scrolling (wheel, touch, keys, scrollbar) may unstick it: scroll
// events caused by layout (an image growing just after a programmatic scroll) must not.
let stick = true;
let userScrollUntil = 0;
const box0 = $('messages');
for (const type of ['wheel', 'touchmove', 'keydown', 'mousedown']) {
  box0.addEventListener(type, () => { userScrollUntil = Date.now() + 1000; }, { passive: true });
}
box0.addEventListener('scroll', () => {
  if (Date.now() < userScrollUntil) stick = box0.scrollHeight - box0.scrollTop - box0.clientHeight < 80;
});
function toEnd() { box0.scrollTop = box0.scrollHeight; }
box0.addEventListener('load', () => { if (stick) toEnd(); }, true);  // <img> loads (capture)
if (window.ResizeObserver) {
  new ResizeObserver(() => { if (stick) toEnd(); }).observe(box0);
}

export function renderMessages(scrollToEnd) {
  const box = $('messages');
  const nearEnd = stick || box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  let lastDay = '';
  let lastSender = null;
  const items = [];
  for (const m of state.messages) {
    const day = new Date(m.ts_ms).toDateString();
    if (day !== lastDay) {
      lastDay = day;
      lastSender = null;
      items.push(el('li', { class: 'day', 'aria-hidden': 'true', text: new Date(m.ts_ms).toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric' }) }));
    }
    const from = m.direction === 'in' ? m.sender : '';
    items.push(renderMessage(m, from !== lastSender));
    lastSender = from;
  }
  box.replaceChildren(...items);
  if (scrollToEnd || nearEnd) { stick = true; toEnd(); }
}

export function renderMessage(m, firstOfRun) {
  const inGroup = isGroup(m.conv);
  const who = m.direction === 'out' ? 'You' : inGroup ? senderName(m) : displayName(state.contact);
  let body;
  const custom = renderers.get(m.kind);
  if (m.kind === 'text') {
    body = el('div', { class: 'bubble' }, ...linkify(m.text));
  } else if (custom) {
    body = custom(m);
  } else {
    body = el('div', { class: 'bubble muted', text: 'This message type is not supported yet.' });
  }
  const sender = inGroup && m.direction === 'in' && firstOfRun
    ? el('span', { class: 'sender', 'aria-hidden': 'true', text: who }) : null;
  const status = m.direction === 'out'
    ? el('span', { class: 'status', 'data-status': m.status, title: m.error || null, text: ` · ${statusLabel(m.status)}` })
    : null;
  const time = el('time', { datetime: new Date(m.ts_ms).toISOString(), title: fmtFull(m.ts_ms), text: fmtTime(m.ts_ms) });
  const li = el('li', { class: `msg ${m.direction}`, 'data-id': m.id, 'data-sender': m.sender, 'aria-label': `${who}, ${fmtTime(m.ts_ms)}` },
    sender, body, el('div', { class: 'meta' }, time, status));
  emit('message-rendered', li, m);
  return li;
}

// --- live events ---------------------------------------------------------------------------
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.current) loadMessages(false).then(refreshSoon);
});

on('event:hello', (ev) => setConn(ev.connected ?? null, ev.displaced));  // also clears "app stopped"
on('event:connection', (ev) => setConn(ev.connected, ev.displaced));
on('event:drained', () => setConn(true));
on('events-lost', checkApp);
on('event:outbox', () => {
  if (state.current) loadMessages(false);
  refreshSoon();
});
$('btn-restore-note-ok').addEventListener('click', async () => {
  state.restored = false;
  show($('restore-note'), false);
  await post('/api/account/restored-seen', {}).catch(() => {});
});
$('btn-use-here').addEventListener('click', async () => {
  try { await post('/api/connection/reconnect', {}); } catch (e) { alertText(e.message); }
});
on('event:message', (ev) => {
  const from = ev.handle ? `@${ev.handle}` : shortAddr(ev.peer);
  const where = ev.group ? ` in ${ev.group.name}` : '';
  const what = ev.file ? `file ${ev.file.name}` : ev.text;
  if (document.visibilityState !== 'visible' || ev.conv !== state.current) {
    announce(`New message from ${from}${where}: ${what}`);
  } else {
    announce(`${from}: ${what}`);
  }
  if (ev.conv === state.current) loadMessages(false);
  refreshSoon();
});
on('event:receipt', (ev) => {
  if (ev.conv === state.current) loadMessages(false);
  refreshSoon();
});
on('event:identity_changed', (ev) => {
  const who = ev.handle ? `@${ev.handle}` : shortAddr(ev.peer);
  alertText(`Safety number with ${who} changed.`);
  if (ev.conv === state.current) loadMessages(false);
  refreshSoon();
});
on('event:group', (ev) => {
  if (ev.left) alertText(`You are no longer a member of ${ev.name}.`);
  if (ev.conv === state.current) loadMessages(false);
  refreshSoon();
});
on('event:unhandled', () => { if (state.account) refreshSoon(); });
