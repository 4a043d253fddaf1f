// Safety numbers: 60 digits and a QR code to compare with a contact, and the verified mark.
import { get, post } from './api.js';
import { $, alertText, announce, el } from './dom.js';
import { displayName, state } from './state.js';
import { renderHeader } from './conversations.js';

let qrUrl = null;
async function openSafety() {
  const address = state.contact && state.current;
  if (!address) return;
  let s;
  try { s = await get(`/api/safety?peer=${encodeURIComponent(address)}`); } catch (e) {
    $('composer-error').textContent = e.message; return;
  }
  const c = s.contact;
  $('safety-title').textContent = `Safety number with ${displayName(c)}`;
  $('safety-digits').replaceChildren(...s.groups.map((g) => el('span', { class: 'digit-group', text: g })));
  $('safety-digits').dataset.digits = s.digits;
  renderSafetyState(c);
  const blob = await get(`/api/safety.svg?peer=${encodeURIComponent(address)}`);
  if (qrUrl) URL.revokeObjectURL(qrUrl);
  qrUrl = URL.createObjectURL(new Blob([blob], { type: 'image/svg+xml' }));
  $('safety-qr').src = qrUrl;
  const dlg = $('dlg-safety');
  if (!dlg.open) dlg.showModal();
}

function renderSafetyState(c) {
  const p = $('safety-state');
  const btn = $('btn-mark-verified');
  if (c.identity_changed) {
    p.className = 'state warn';
    p.textContent = 'This safety number changed since you last talked.';
    btn.textContent = 'Mark as verified';
    btn.dataset.verified = 'false';
  } else if (c.verified) {
    p.className = 'state ok';
    p.textContent = '✓ Verified';
    btn.textContent = 'Clear verification';
    btn.dataset.verified = 'true';
  } else {
    p.className = 'state';
    p.textContent = 'Not verified yet';
    btn.textContent = 'Mark as verified';
    btn.dataset.verified = 'false';
  }
}

$('btn-safety').addEventListener('click', openSafety);
$('btn-warning-verify').addEventListener('click', openSafety);
$('btn-safety-close').addEventListener('click', () => $('dlg-safety').close());
$('btn-mark-verified').addEventListener('click', async () => {
  const verified = $('btn-mark-verified').dataset.verified !== 'true';
  try {
    const r = await post('/api/contacts/verify', { address: state.current, verified });
    state.contact = r.contact;
    renderSafetyState(r.contact);
    renderHeader();
    announce(verified ? `${displayName(r.contact)} marked as verified` : 'Verification cleared');
  } catch (err) { alertText(err.message); }
});
