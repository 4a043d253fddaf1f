// Telling the user about new messages outside the open chat: desktop notifications (off
// until the user turns them on; the browser's permission is asked once, on that click;
// the text and sender stay hidden unless the user chooses to show them), and the unread
// total in the tab title and on the favicon.
import { $, el, shortAddr, show } from './dom.js';
import { on, state } from './state.js';
import { openConversation } from './conversations.js';

const PREFS = 'xchat-notify';  // {on: bool, content: bool, asked: bool}: settings, no content

function prefs() {
  try { return { on: false, content: false, asked: false, ...JSON.parse(localStorage.getItem(PREFS) || '{}') }; } catch (e) { return { on: false, content: false, asked: false }; }
}
function savePrefs(p) { localStorage.setItem(PREFS, JSON.stringify(p)); }
const supported = () => typeof Notification !== 'undefined';

function renderPrefs() {
  const p = prefs();
  $('set-notify').checked = p.on && supported() && Notification.permission === 'granted';
  $('set-notify-content').checked = p.content;
  $('set-notify-content').disabled = !$('set-notify').checked;
  $('notify-status').textContent = !supported() ? 'This browser has no notifications.'
    : Notification.permission === 'denied' ? 'Notifications are blocked for this page in the browser settings.' : '';
  show($('notify-offer'), supported() && !p.asked && !p.on && Notification.permission === 'default');
}

async function turnOn() {
  const p = prefs();
  p.asked = true;
  const perm = Notification.permission === 'default' ? await Notification.requestPermission() : Notification.permission;
  p.on = perm === 'granted';
  savePrefs(p);
  renderPrefs();
}

$('set-notify').addEventListener('change', async () => {
  if ($('set-notify').checked) await turnOn();
  else { const p = prefs(); p.on = false; savePrefs(p); renderPrefs(); }
});
$('set-notify-content').addEventListener('change', () => {
  const p = prefs(); p.content = $('set-notify-content').checked; savePrefs(p);
});
$('btn-notify-on').addEventListener('click', turnOn);
$('btn-notify-later').addEventListener('click', () => { const p = prefs(); p.asked = true; savePrefs(p); renderPrefs(); });
on('app-entered', renderPrefs);
$('btn-settings').addEventListener('click', renderPrefs);

on('event:message', (ev) => {
  const p = prefs();
  if (!p.on || !supported() || Notification.permission !== 'granted') return;
  if (document.visibilityState === 'visible' && document.hasFocus() && ev.conv === state.current) return;
  const from = ev.handle ? `@${ev.handle}` : shortAddr(ev.peer);
  const where = ev.group ? ` in ${ev.group.name}` : '';
  const body = p.content ? `${from}${where}: ${ev.file ? `file ${ev.file.name}` : ev.text}` : 'New message';
  const n = new Notification('XChat', { body, tag: p.content ? ev.conv : 'xchat', silent: false });
  n.onclick = () => { window.focus(); openConversation(ev.conv); n.close(); };
});

// --- unread total: title and favicon ---------------------------------------------------------
const icon = document.querySelector('link[rel="icon"]');
const plainIcon = icon ? icon.href : '';
let shown = -1;
let base = null;

function badgeIcon(total) {
  const c = el('canvas', { width: 64, height: 64 });
  const g = c.getContext('2d');
  if (base) g.drawImage(base, 0, 0, 64, 64);
  g.fillStyle = '#d93025';
  g.beginPath(); g.arc(44, 20, 20, 0, 2 * Math.PI); g.fill();
  g.fillStyle = '#fff';
  g.font = 'bold 26px sans-serif';
  g.textAlign = 'center'; g.textBaseline = 'middle';
  g.fillText(total > 99 ? '99+' : String(total), 44, 21);
  return c.toDataURL('image/png');
}

export function setUnread(total) {
  if (total === shown) return;
  shown = total;
  document.title = total ? `(${total}) XChat` : 'XChat';
  if (!icon) return;
  icon.dataset.unread = String(total);
  if (!total) { icon.type = 'image/svg+xml'; icon.href = plainIcon; return; }
  icon.type = 'image/png';
  icon.href = badgeIcon(total);
}

if (icon) {
  const img = new Image();
  img.onload = () => { base = img; const t = shown; shown = -1; if (t > 0) setUnread(t); };
  img.src = plainIcon;
}
on('conversations-rendered', (convs) => {
  setUnread(convs.reduce((n, c) => n + (c.unread || 0), 0));
});
