// Linked devices (PROTOCOL.md Part VII): "Link a device" on the first screen (a link code
// and its QR, then wait for approval), Settings → Linked devices (approve a code, list,
// rename, remove), and messages sent from our other devices appearing live.
// Built with el() only (text, never markup); keys stay in the local app process.
import { get, post } from './api.js';
import { $, announce, el, fmtFull, show } from './dom.js';
import { on, state } from './state.js';
import { enterApp, loadMessages, refreshSoon } from './conversations.js';

// --- the first screen: link this browser's profile to an existing account ---------------
const linkForm = el('form', { id: 'form-link', novalidate: true, hidden: true },
  el('label', { for: 'link-server', text: 'Server' }),
  el('input', { id: 'link-server', type: 'url', required: true, spellcheck: 'false' }),
  el('label', { for: 'link-name', text: 'Name of this device' }),
  el('input', { id: 'link-name', type: 'text', value: 'browser', maxlength: '64' }),
  el('label', {}, el('input', { id: 'link-history', type: 'checkbox', checked: true }),
    ' Transfer the message history'),
  el('button', { type: 'submit', class: 'primary', id: 'btn-link-start', text: 'Show link code' }),
  el('section', { id: 'link-pending', hidden: true, 'aria-labelledby': 'link-code-title' },
    el('h2', { id: 'link-code-title', text: 'Link code' }),
    el('p', { id: 'link-code', class: 'mono phrase', 'aria-live': 'polite' }),
    el('img', { id: 'link-qr', class: 'qr', alt: 'QR code of the link code', width: '200', height: '200' }),
    el('p', { class: 'muted small', text: 'On a device of your account open Settings → Linked devices and enter this code, or run: xchat device add CODE. The code is valid for 10 minutes and works once.' }),
    el('p', { id: 'link-status', class: 'small', role: 'status', text: 'Waiting for approval…' })),
  el('p', { id: 'link-error', class: 'error', role: 'alert' }));
const linkToggle = el('button', { type: 'button', id: 'btn-link-device', class: 'small-btn', text: 'Link a device' });
$('onboarding-start').append(el('div', { class: 'row end' }, linkToggle), linkForm);

linkToggle.addEventListener('click', () => {
  show(linkForm, linkForm.hidden);
  $('link-server').value = $('link-server').value || state.defaultServer;
  $('link-server').focus();
});

let qrUrl = null;
linkForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  $('link-error').textContent = '';
  $('btn-link-start').disabled = true;
  try {
    const r = await post('/api/devices/link', {
      server: $('link-server').value.trim(),
      name: $('link-name').value.trim(),
      history: $('link-history').checked,
    });
    $('link-code').textContent = r.code;
    const blob = await get('/api/devices/link.svg');
    if (qrUrl) URL.revokeObjectURL(qrUrl);
    qrUrl = URL.createObjectURL(new Blob([blob], { type: 'image/svg+xml' }));
    $('link-qr').src = qrUrl;
    show($('link-pending'), true);
    announce('Link code shown; waiting for approval');
  } catch (err) {
    $('link-error').textContent = err.message;
    $('btn-link-start').disabled = false;
  }
});

on('event:device_linked', async (ev) => {
  $('link-status').textContent = `Linked. ${ev.messages} messages of history imported.`;
  const st = await get('/api/state');
  state.account = st.account;
  enterApp();
});
on('event:device_link_failed', (ev) => {
  $('link-error').textContent = ev.error;
  show($('link-pending'), false);
  $('btn-link-start').disabled = false;
});

// --- Settings → Linked devices ------------------------------------------------------------
const section = el('fieldset', { id: 'devices-settings', class: 'devices-choice' },
  el('legend', { text: 'Linked devices' }),
  el('ul', { id: 'device-list', class: 'device-list', 'aria-label': 'Devices of this account' }),
  el('form', { id: 'form-device-add', novalidate: true },
    el('label', { for: 'device-code', text: 'Approve a new device: its link code' }),
    el('div', { class: 'row' },
      el('input', { id: 'device-code', type: 'text', spellcheck: 'false', autocomplete: 'off', placeholder: 'abcd-efgh-…' }),
      el('button', { type: 'submit', id: 'btn-device-add', text: 'Approve' })),
    el('label', {}, el('input', { id: 'device-history', type: 'checkbox', checked: true }),
      ' Send the message history'),
    el('label', { for: 'device-max-attachments', text: 'Attachments to copy with the history, newest first (MB, 0 to 256; 0 copies none)' }),
    el('input', { id: 'device-max-attachments', type: 'number', min: '0', max: '256', step: '1', value: '25',
      inputmode: 'numeric', 'aria-describedby': 'devices-status' })),
  el('p', { id: 'devices-status', class: 'small', role: 'status' }));
const forgetRow = $('btn-forget-browser').closest('.row');
forgetRow.parentNode.insertBefore(section, forgetRow);

function renderDevices(devices) {
  const list = $('device-list');
  list.replaceChildren();
  for (const d of devices) {
    const name = el('span', { class: 'grow', text: d.name + (d.current ? ' (this device)' : '') });
    const li = el('li', { class: 'row', 'data-device': String(d.id) }, name,
      el('span', { class: 'muted small', text: `#${d.id}, linked ${fmtFull(d.linked_at)}` }),
      el('button', { type: 'button', class: 'small-btn', text: 'Rename', 'aria-label': `Rename ${d.name}`,
        onclick: async () => {
          const next = prompt('New name', d.name);
          if (!next) return;
          try { renderDevices((await post('/api/devices/rename', { id: d.id, name: next })).devices); }
          catch (err) { $('devices-status').textContent = err.message; }
        } }),
      d.current ? null : el('button', { type: 'button', class: 'small-btn danger', text: 'Remove', 'aria-label': `Remove ${d.name}`,
        onclick: async () => {
          if (!confirm(`Remove ${d.name}? It will not receive anything sent from now on.`)) return;
          try {
            renderDevices((await post('/api/devices/remove', { id: d.id })).devices);
            announce(`${d.name} removed`);
          } catch (err) { $('devices-status').textContent = err.message; }
        } }));
    list.append(li);
  }
}

async function refreshDevices() {
  $('devices-status').textContent = '';
  try { renderDevices((await get('/api/devices')).devices); }
  catch (err) { $('devices-status').textContent = err.message; }
}
$('btn-settings').addEventListener('click', refreshDevices);

$('form-device-add').addEventListener('submit', async (e) => {
  e.preventDefault();
  const code = $('device-code').value.trim();
  if (!code) return;
  const limit = $('device-max-attachments');
  const mb = Number(limit.value.trim());
  if (limit.value.trim() === '' || !Number.isInteger(mb) || mb < 0 || mb > 256) {
    limit.setAttribute('aria-invalid', 'true');
    $('devices-status').textContent = 'Attachments: a whole number of MB from 0 to 256.';
    limit.focus();
    return;
  }
  limit.removeAttribute('aria-invalid');
  $('btn-device-add').disabled = true;
  $('devices-status').textContent = 'Sending the account and history to the new device…';
  try {
    const r = await post('/api/devices/add', {
      code, history: $('device-history').checked, max_attachments: mb,
    });
    $('device-code').value = '';
    $('devices-status').textContent = `Approved ${r.name} (device ${r.device_id}).`;
    await refreshDevices();
    $('devices-status').textContent = `Approved ${r.name} (device ${r.device_id}).`;
  } catch (err) {
    $('devices-status').textContent = err.message;
  } finally {
    $('btn-device-add').disabled = false;
  }
});

// --- sent from another of our devices: show it live --------------------------------------
on('event:message_synced', (ev) => {
  if (state.current === ev.conv) loadMessages(true);
  refreshSoon();
});
on('event:device_sync', (ev) => {
  if (ev.kind === 'device_list' && $('dlg-settings').open) refreshDevices();
  // read, accepted, blocked, declined or deleted on another device: the lists follow here
  if (['read', 'conversation', 'delete'].includes(ev.kind)) refreshSoon();
});
