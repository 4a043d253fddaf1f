// The page's shared state and the hook points feature modules plug into.
//
// Hooks (for devices.js, rich.js, calls.js, backup.js, ...):
//   on('event:<type>', fn(ev))   a live event from the app process (SSE), by its "type"
//   on('event:unhandled', fn(ev)) a live event no module handles
//   on('events-lost', fn())      the event stream ended (reconnecting)
//   on('app-entered', fn())      the main view was shown (account ready)
//   on('conversation-opened', fn(conv))
//   on('message-rendered', fn(li, m))  decorate a message's <li> after it is built
//   renderers.set(kind, fn(m) -> Node) the bubble content for a message kind
import { shortAddr } from './dom.js';

// A conversation id ("conv") is a contact's address or "group:<32 hex>" for a group.
export const state = {
  account: null,
  convs: [],
  current: null,        // conv id of the open conversation
  contact: null,        // the open 1:1 contact, or null
  group: null,          // the open group, or null
  messages: [],
  previews: new Map(),  // message id -> blob: URL of a decrypted image
  saved: new Map(),     // message id -> file name it was saved under
  transfers: new Map(), // transfer id -> {label, done, total}
  defaultServer: '',
  restored: false,      // restored from the phrase: no history here (the page says why)
};

const hooks = new Map();
export function on(name, fn) {
  if (!hooks.has(name)) hooks.set(name, []);
  hooks.get(name).push(fn);
}
/** Call every handler of a hook; returns how many there were. */
export function emit(name, ...args) {
  const fns = hooks.get(name) || [];
  for (const fn of fns) {
    try { fn(...args); } catch (e) { console.error(`hook ${name}`, e); }
  }
  return fns.length;
}
export const renderers = new Map();

export const isGroup = (conv) => typeof conv === 'string' && conv.startsWith('group:');

export function displayName(c) {
  if (!c) return '';
  return c.handle ? `@${c.handle}` : shortAddr(c.address);
}
export function senderName(m) {
  return m.sender_handle ? `@${m.sender_handle}` : shortAddr(m.sender);
}
export function memberName(m) {
  return m.me ? 'You' : (m.handle ? `@${m.handle}` : shortAddr(m.address));
}
export function convName(c) {
  return c.kind === 'group' ? c.name : displayName(c);
}
export function preview(m) {
  if (!m) return 'No messages yet';
  const who = m.direction === 'out' ? 'You: ' : isGroup(m.conv) ? `${senderName(m)}: ` : '';
  if (m.kind === 'text') return who + m.text;
  if (m.kind === 'file') return `${who}${m.file.name} (file)`;
  return `${who}(unsupported message)`;
}
