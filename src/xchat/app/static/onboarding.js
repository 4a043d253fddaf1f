// First run: create an account (then show and confirm the recovery phrase) or restore one.
import { post } from './api.js';
import { $, el, handleProblem, phraseWords, show, showOnly } from './dom.js';
import { state } from './state.js';
import { enterApp } from './conversations.js';

export function startOnboarding() {
  showOnly('view-onboarding');
  $('create-server').value = state.defaultServer;
  $('restore-server').value = state.defaultServer;
  (state.defaultServer ? $('create-handle') : $('create-server')).focus();
}

function selectTab(which) {
  const create = which === 'create';
  $('tab-create').setAttribute('aria-selected', String(create));
  $('tab-restore').setAttribute('aria-selected', String(!create));
  $('tab-create').tabIndex = create ? 0 : -1;
  $('tab-restore').tabIndex = create ? -1 : 0;
  show($('form-create'), create);
  show($('form-restore'), !create);
  $('onboarding-error').textContent = '';
}
$('tab-create').addEventListener('click', () => selectTab('create'));
$('tab-restore').addEventListener('click', () => selectTab('restore'));
for (const tab of [$('tab-create'), $('tab-restore')]) {
  tab.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
      const next = tab.id === 'tab-create' ? 'restore' : 'create';
      selectTab(next);
      $(`tab-${next}`).focus();
      e.preventDefault();
    }
  });
}

function busy(text) {
  const b = $('onboarding-busy');
  b.textContent = text || '';
  show(b, Boolean(text));
  for (const btn of document.querySelectorAll('#view-onboarding button')) btn.disabled = Boolean(text);
}

$('form-create').addEventListener('submit', async (e) => {
  e.preventDefault();
  const server = $('create-server').value.trim();
  const handle = $('create-handle').value.trim().replace(/^@/, '');
  $('onboarding-error').textContent = '';
  if (!/^https?:\/\//.test(server)) { $('onboarding-error').textContent = 'Enter the server URL, e.g. http://127.0.0.1:8080'; $('create-server').focus(); return; }
  if (handle && handleProblem(handle)) { $('onboarding-error').textContent = handleProblem(handle); $('create-handle').focus(); return; }
  busy('Creating your keys and account (solving a small proof of work)…');
  try {
    const r = await post('/api/account/create', { server, handle });
    state.account = r.account;
    busy('');
    showPhrase(r.recovery_phrase, r.confirm_indices);
  } catch (err) {
    busy('');
    $('onboarding-error').textContent = err.message;
  }
});

$('form-restore').addEventListener('submit', async (e) => {
  e.preventDefault();
  const server = $('restore-server').value.trim();
  const words = phraseWords($('restore-phrase').value);
  const phrase = words.join(' ');
  $('onboarding-error').textContent = '';
  if (!/^https?:\/\//.test(server)) { $('onboarding-error').textContent = 'Enter the server URL.'; return; }
  if (words.length !== 24) { $('onboarding-error').textContent = `The recovery phrase has 24 words; this has ${words.length}.`; return; }
  busy('Restoring your account…');
  try {
    const r = await post('/api/account/restore', { server, phrase });
    state.account = r.account;
    state.restored = true;
    busy('');
    $('restore-phrase').value = '';
    enterApp();
  } catch (err) {
    busy('');
    $('onboarding-error').textContent = err.message;
  }
});

let confirmIndices = [];
export function showPhrase(words, indices) {
  confirmIndices = indices;
  show($('onboarding-start'), false);
  show($('form-confirm'), false);
  show($('phrase-show'), true);
  const ol = $('phrase-words');
  ol.replaceChildren(...words.map((w) => el('li', { text: w })));
  $('phrase-title').tabIndex = -1;
  $('phrase-title').focus();
}
$('btn-phrase-next').addEventListener('click', () => {
  // The words leave the page before the user types them back.
  $('phrase-words').replaceChildren();
  show($('phrase-show'), false);
  show($('form-confirm'), true);
  const box = $('confirm-fields');
  box.replaceChildren();
  confirmIndices.forEach((n, i) => {
    const id = `confirm-word-${i}`;
    box.append(
      el('label', { for: id, text: `Word #${n}` }),
      el('input', { id, type: 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none', 'data-index': n }),
    );
  });
  $('confirm-word-0').focus();
});
$('btn-confirm-back').addEventListener('click', async () => {
  try {
    const p = await post('/api/account/phrase', {});
    showPhrase(p.recovery_phrase, p.confirm_indices);
  } catch (err) { $('onboarding-error').textContent = err.message; }
});
$('form-confirm').addEventListener('submit', async (e) => {
  e.preventDefault();
  const words = confirmIndices.map((_, i) => $(`confirm-word-${i}`).value.trim().toLowerCase());
  $('onboarding-error').textContent = '';
  try {
    await post('/api/account/confirm', { words });
    enterApp();
  } catch (err) {
    $('onboarding-error').textContent = err.message;
  }
});
