// The message box: Enter sends, Shift+Enter adds a line; one draft per conversation, kept
// by the app process (sealed in the profile like messages, so it survives reloads and
// never sits in the browser's storage); sending with an outbox: a message the app
// accepted stays on screen as pending (clock) until the relay has it, then turns into
// Sent/Delivered in place; a real failure offers Retry under the same message id.
import { api, post } from './api.js';
import { $, el } from './dom.js';
import { on, state } from './state.js';
import { loadMessages, refreshConversations, renderMessage } from './conversations.js';

const input = $('composer-input');
const drafts = new Map();  // conv -> text (what the app process has, plus unsaved edits)
const saveTimers = new Map();

function resize() {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 144)}px`;
}

function saveDraft(conv, now) {
  clearTimeout(saveTimers.get(conv));
  saveTimers.delete(conv);
  const run = () => {
    saveTimers.delete(conv);
    const text = drafts.get(conv) || '';
    api('POST', '/api/drafts', { conv, text }, { keepalive: true }).catch(() => {});
  };
  if (now) run(); else saveTimers.set(conv, setTimeout(run, 400));
}

function setDraft(conv, text) {
  if (text) drafts.set(conv, text); else drafts.delete(conv);
}

on('app-entered', async () => {
  try {
    const r = await api('GET', '/api/drafts');
    for (const [conv, text] of Object.entries(r.drafts || {})) if (!drafts.has(conv)) drafts.set(conv, text);
    if (state.current && !input.value) { input.value = drafts.get(state.current) || ''; resize(); }
  } catch (e) { /* drafts are a convenience */ }
});
on('conversation-switch', (prev, next) => {
  if (prev) {
    setDraft(prev, input.value);
    if (saveTimers.has(prev)) saveDraft(prev, true);
  }
  input.value = next ? (drafts.get(next) || '') : '';
  resize();
  $('composer-status').textContent = '';
});
// The list shows a conversation's draft instead of its last message (as Signal does).
on('conversations-rendered', () => {
  for (const item of document.querySelectorAll('#conv-list .conv-item')) {
    const conv = item.dataset.conv;
    const draft = conv !== state.current ? drafts.get(conv) : '';
    const last = item.querySelector('.conv-last');
    if (draft && last) {
      last.replaceChildren(el('span', { class: 'draft-mark', text: 'Draft: ' }), draft);
    }
  }
});
window.addEventListener('pagehide', () => {
  for (const conv of [...saveTimers.keys()]) saveDraft(conv, true);
});

input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('composer').requestSubmit();
  }
});
input.addEventListener('input', () => {
  resize();
  if (!state.current) return;
  setDraft(state.current, input.value);
  saveDraft(state.current, false);
});

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = input.value;
  const conv = state.current;
  if (!text.trim() || !conv) return;
  $('composer-error').textContent = '';
  $('composer-status').textContent = '';
  const btn = $('btn-send');
  btn.disabled = true;
  // The text leaves the box at once (a second Enter cannot send it twice); it comes back
  // only if the app process did not accept it.
  input.value = '';
  resize();
  setDraft(conv, '');
  const pending = renderMessage({ id: '', peer: conv, conv, sender: null, direction: 'out', ts_ms: Date.now(), status: 'sending', kind: 'text', text, file: null }, false);
  pending.classList.add('pending');
  $('messages').append(pending);
  $('messages').scrollTop = $('messages').scrollHeight;
  try {
    const r = await post('/api/messages/send', { to: conv, text });
    saveDraft(conv, true);  // the app process cleared it too; this drops a queued save
    if (r.status === 'pending') {
      $('composer-status').textContent = 'The relay is unreachable: the message waits and goes out once it is back.';
    }
    if (state.current === conv) await loadMessages(true);
    refreshConversations();
  } catch (err) {
    pending.remove();
    if (state.current === conv && !input.value) { input.value = text; resize(); }
    setDraft(conv, text);
    $('composer-error').textContent = err.status === 409 && state.contact && state.contact.identity_changed
      ? 'Not sent: the safety number changed. Compare it and mark it verified first.'
      : `Not sent: ${err.message}`;
  } finally {
    btn.disabled = false;
    input.focus();
  }
});

async function retry(m, button) {
  button.disabled = true;
  button.textContent = 'Retrying…';
  $('composer-error').textContent = '';
  try {
    await post('/api/messages/retry', { conv: m.conv, id: m.id });
  } catch (err) {
    $('composer-error').textContent = `Not sent: ${err.message}`;
  }
  if (state.current === m.conv) await loadMessages(false);
  refreshConversations();
}

on('message-rendered', (li, m) => {
  if (m.direction !== 'out' || m.status !== 'failed' || !m.id) return;
  const b = el('button', { type: 'button', class: 'small-btn retry-btn', 'aria-label': 'Retry sending this message' }, 'Retry');
  b.addEventListener('click', () => retry(m, b));
  li.querySelector('.meta').append(' ', b);
  if (m.error) li.querySelector('.meta').append(el('span', { class: 'send-error small', text: ` ${m.error}` }));
});
