// Backup and recovery (PROTOCOL.md Part X): a PIN after onboarding (skippable, reminded),
// backup status and "Back up now" in Settings, "Restore from backup" on the first screen.
// Everything is built here with el() (text only, no markup); the PIN goes to the local app
// process only, which stretches it and talks to the realms.
import { post, get } from './api.js';
import { $, announce, el, fmtSize, show, showOnly } from './dom.js';
import { on, state } from './state.js';
import { enterApp } from './conversations.js';

const pinHelp = 'At least 6 digits (not 123456, repeats, sequences or dates), or a passphrase of 8+ characters.';

function pinField(id, label) {
  return [
    el('label', { for: id, text: label }),
    el('input', { id, type: 'password', autocomplete: 'new-password', inputmode: 'text', spellcheck: 'false' }),
  ];
}

// --- the PIN dialog (after onboarding, and "Set PIN" / "Change PIN" in Settings) ---------
const pinDialog = el('dialog', { id: 'dlg-backup-pin', 'aria-labelledby': 'backup-pin-title' },
  el('h2', { id: 'backup-pin-title', text: 'Protect your account with a PIN' }),
  el('p', { class: 'muted', text: 'With a PIN you can restore this account and its messages on a new device without the 24-word phrase. Your PIN is split across independent realms; nobody can read your backup, and after 10 wrong guesses the PIN backup is deleted (the phrase still works).' }),
  el('form', { id: 'form-backup-pin', novalidate: true },
    ...pinField('backup-pin', 'PIN or passphrase'),
    el('p', { class: 'hint', text: pinHelp }),
    ...pinField('backup-pin2', 'Type it again'),
    el('p', { id: 'backup-pin-error', class: 'error', role: 'alert' }),
    el('p', { id: 'backup-pin-busy', class: 'muted small', role: 'status' }),
    el('div', { class: 'row end' },
      el('button', { type: 'button', id: 'btn-backup-skip', text: 'Not now' }),
      el('button', { type: 'submit', class: 'primary', id: 'btn-backup-set', text: 'Set PIN' }))));
document.body.append(pinDialog);

function openPinDialog() {
  $('backup-pin').value = '';
  $('backup-pin2').value = '';
  $('backup-pin-error').textContent = '';
  $('backup-pin-busy').textContent = '';
  if (!pinDialog.open) pinDialog.showModal();
  $('backup-pin').focus();
}

$('form-backup-pin').addEventListener('submit', async (e) => {
  e.preventDefault();
  const pin = $('backup-pin').value;
  if (pin !== $('backup-pin2').value) { $('backup-pin-error').textContent = 'The two entries differ.'; return; }
  $('backup-pin-error').textContent = '';
  $('backup-pin-busy').textContent = 'Splitting your key across the realms and backing up…';
  $('btn-backup-set').disabled = true;
  try {
    const st = await post('/api/backup/enable', { pin });
    pinDialog.close();
    renderStatus(st);
    announce('PIN set; your account is backed up');
  } catch (err) {
    $('backup-pin-error').textContent = err.message;
  } finally {
    $('backup-pin-busy').textContent = '';
    $('btn-backup-set').disabled = false;
  }
});
$('btn-backup-skip').addEventListener('click', async () => {
  pinDialog.close();
  try { renderStatus(await post('/api/backup/skip', {})); } catch (e) { /* shown in Settings */ }
});

// --- Settings: status, "Back up now", "Set PIN" ------------------------------------------
const section = el('fieldset', { id: 'backup-settings', class: 'backup-choice' },
  el('legend', { text: 'Backup' }),
  el('p', { id: 'backup-status', class: 'small', role: 'status', text: 'Checking…' }),
  el('div', { class: 'row' },
    el('button', { type: 'button', id: 'btn-backup-now', class: 'small-btn', text: 'Back up now' }),
    el('button', { type: 'button', id: 'btn-backup-pin', class: 'small-btn', text: 'Set PIN' })));
const forgetRow = $('btn-forget-browser').closest('.row');
forgetRow.parentNode.insertBefore(section, forgetRow);

function renderStatus(st) {
  const s = $('backup-status');
  show($('btn-backup-now'), Boolean(st.enabled));
  $('btn-backup-pin').textContent = st.enabled ? 'Change PIN' : 'Set PIN';
  if (!st.enabled) {
    s.textContent = 'Not protected: set a PIN so you can restore this account and its messages on a new device.';
    return;
  }
  const when = st.last_backup_ms ? new Date(st.last_backup_ms).toLocaleString() : 'never';
  const size = st.last_backup_size ? fmtSize(st.last_backup_size) : '–';
  s.textContent = `Backed up ${when} (${size}, ${st.messages} message${st.messages === 1 ? '' : 's'}). PIN held by ${st.threshold} of ${st.realms.length} realms: ${st.realms.map((r) => r.name).join(', ')}.`;
}

async function refresh() {
  try { renderStatus(await get('/api/backup/status')); } catch (err) { $('backup-status').textContent = err.message; }
}
$('btn-settings').addEventListener('click', refresh);
$('btn-backup-pin').addEventListener('click', openPinDialog);
$('btn-backup-now').addEventListener('click', async () => {
  $('backup-status').textContent = 'Backing up…';
  try { renderStatus(await post('/api/backup/now', {})); announce('Backed up'); } catch (err) { $('backup-status').textContent = err.message; }
});

on('app-entered', async () => {
  try {
    const st = await get('/api/backup/status');
    if (st.reminder) openPinDialog();
  } catch (e) { /* no account yet, or the app is busy: Settings shows it */ }
});
on('event:backup', (ev) => { if ($('dlg-settings').open) renderStatus(ev); });

// --- first screen: "Restore from backup" --------------------------------------------------
const restoreForm = el('form', { id: 'form-restore-backup', novalidate: true, hidden: true },
  el('label', { for: 'backup-server', text: 'Server URL' }),
  el('input', { id: 'backup-server', type: 'url', spellcheck: 'false', placeholder: 'http://127.0.0.1:8080' }),
  el('label', { for: 'backup-target', text: 'Your @handle or address' }),
  el('input', { id: 'backup-target', type: 'text', spellcheck: 'false', autocapitalize: 'none', autocomplete: 'username' }),
  el('label', { for: 'backup-restore-pin', text: 'Backup PIN' }),
  el('input', { id: 'backup-restore-pin', type: 'password', autocomplete: 'current-password', spellcheck: 'false' }),
  el('p', { id: 'backup-restore-error', class: 'error', role: 'alert' }),
  el('p', { id: 'backup-restore-busy', class: 'muted small', role: 'status' }),
  el('button', { type: 'submit', class: 'primary', id: 'btn-restore-backup', text: 'Restore from backup' }));
const toggle = el('button', { type: 'button', id: 'btn-show-restore-backup', class: 'small-btn', 'aria-expanded': 'false', 'aria-controls': 'form-restore-backup', text: 'Restore from backup (PIN)' });
$('onboarding-start').append(el('div', { class: 'row end' }, toggle), restoreForm);
toggle.addEventListener('click', () => {
  const open = restoreForm.hidden;
  show(restoreForm, open);
  for (const id of ['form-create', 'form-restore']) if (open) show($(id), false);
  if (!open) show($('form-create'), $('tab-create').getAttribute('aria-selected') === 'true');
  if (!open) show($('form-restore'), $('tab-restore').getAttribute('aria-selected') === 'true');
  toggle.setAttribute('aria-expanded', String(open));
  if (open) {
    $('backup-server').value = $('backup-server').value || state.defaultServer;
    ($('backup-server').value ? $('backup-target') : $('backup-server')).focus();
  }
});
for (const tab of ['tab-create', 'tab-restore']) {
  $(tab).addEventListener('click', () => { show(restoreForm, false); toggle.setAttribute('aria-expanded', 'false'); });
}
restoreForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const server = $('backup-server').value.trim();
  const target = $('backup-target').value.trim();
  const pin = $('backup-restore-pin').value;
  const err = $('backup-restore-error');
  err.textContent = '';
  if (!/^https?:\/\//.test(server)) { err.textContent = 'Enter the server URL.'; return; }
  if (!target) { err.textContent = 'Enter your @handle or address.'; $('backup-target').focus(); return; }
  $('backup-restore-busy').textContent = 'Asking the realms and restoring your messages…';
  $('btn-restore-backup').disabled = true;
  try {
    const r = await post('/api/backup/restore', { server, target, pin });
    $('backup-restore-pin').value = '';
    state.account = r.account;
    state.restored = !r.history;  // with a history backup, earlier messages are here
    showOnly('view-app');
    enterApp();
  } catch (ex) {
    err.textContent = ex.message;
  } finally {
    $('backup-restore-busy').textContent = '';
    $('btn-restore-backup').disabled = false;
  }
});
