// The message box: Enter sends, Shift+Enter adds a line.
import { post } from './api.js';
import { $ } from './dom.js';
import { state } from './state.js';
import { loadMessages, refreshConversations, renderMessage } from './conversations.js';

const input = $('composer-input');
input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('composer').requestSubmit();
  }
});
input.addEventListener('input', () => {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 144)}px`;
});
$('composer').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = input.value;
  if (!text.trim() || !state.current) return;
  $('composer-error').textContent = '';
  const btn = $('btn-send');
  btn.disabled = true;
  // Show it at once as "Sending…"; the reload after the server's ack replaces it.
  const pending = renderMessage({ id: '', peer: state.current, conv: state.current, sender: null, direction: 'out', ts_ms: Date.now(), status: 'sending', kind: 'text', text, file: null }, false);
  pending.classList.add('pending');
  $('messages').append(pending);
  $('messages').scrollTop = $('messages').scrollHeight;
  try {
    await post('/api/messages/send', { to: state.current, text });
    input.value = '';
    input.style.height = 'auto';
    await loadMessages(true);
    refreshConversations();
  } catch (err) {
    pending.remove();
    $('composer-error').textContent = err.status === 409 && state.contact && state.contact.identity_changed
      ? 'Not sent: the safety number changed. Compare it and mark it verified first.'
      : `Not sent: ${err.message}`;
  } finally {
    btn.disabled = false;
    input.focus();
  }
});
