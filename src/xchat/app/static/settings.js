// Theme (system/light/dark) and the Settings dialog: server, address (copy, QR), handle.
import { forgetSession, get, post } from './api.js';
import { $, alertText, announce, handleProblem, show } from './dom.js';
import { state } from './state.js';

const THEME_KEY = 'xchat-theme';
const THEMES = ['system', 'light', 'dark'];

export function applyTheme(theme) {
  if (!THEMES.includes(theme)) theme = 'system';
  if (theme === 'system') document.documentElement.removeAttribute('data-theme');
  else document.documentElement.setAttribute('data-theme', theme);
  localStorage.setItem(THEME_KEY, theme);
  $('btn-theme').setAttribute('aria-label', `Theme: ${theme}. Change theme`);
  $('btn-theme').title = `Theme: ${theme}`;
  $('theme-icon').textContent = theme === 'light' ? '☀' : theme === 'dark' ? '☾' : '◐';
  for (const r of document.querySelectorAll('input[name="theme"]')) r.checked = r.value === theme;
}
export function currentTheme() { return localStorage.getItem(THEME_KEY) || 'system'; }

export function renderWhoami() {
  const me = state.account;
  $('whoami').textContent = me && me.handle
    ? `You are @${me.handle}. Friends can reach you by that handle.`
    : 'You have no handle yet: set one in Settings so friends can find you.';
}

let addrQrUrl = null;
$('btn-settings').addEventListener('click', async () => {
  const st = await get('/api/state');
  state.account = st.account;
  $('set-server').textContent = st.account.server;
  $('set-address').textContent = st.account.address;
  $('set-handle').value = st.account.handle || '';
  $('handle-status').textContent = '';
  applyTheme(currentTheme());
  $('dlg-settings').showModal();
});
$('btn-settings-close').addEventListener('click', () => $('dlg-settings').close());
$('btn-copy-address').addEventListener('click', async () => {
  try { await navigator.clipboard.writeText(state.account.address); announce('Address copied'); } catch (e) { alertText('Copy failed: select the address and copy it.'); }
});
$('btn-show-address-qr').addEventListener('click', async () => {
  const img = $('address-qr');
  const btn = $('btn-show-address-qr');
  if (!img.hidden) { show(img, false); btn.setAttribute('aria-expanded', 'false'); btn.textContent = 'Show QR'; return; }
  if (!addrQrUrl) {
    const blob = await get('/api/address.svg');
    addrQrUrl = URL.createObjectURL(new Blob([blob], { type: 'image/svg+xml' }));
  }
  img.src = addrQrUrl;
  show(img, true);
  btn.setAttribute('aria-expanded', 'true');
  btn.textContent = 'Hide QR';
});
$('form-handle').addEventListener('submit', async (e) => {
  e.preventDefault();
  const handle = $('set-handle').value.trim().replace(/^@/, '');
  const problem = handleProblem(handle);
  if (problem) { $('handle-status').textContent = problem; $('set-handle').focus(); return; }
  if (state.account && handle === state.account.handle) { $('handle-status').textContent = `You are already @${handle}`; return; }
  $('handle-status').textContent = 'Saving…';
  try {
    const r = await post('/api/account/handle', { handle });
    state.account = r.account;
    $('handle-status').textContent = `Saved: you are @${r.account.handle}`;
    renderWhoami();
  } catch (err) { $('handle-status').textContent = err.message; }
});
$('btn-forget-browser').addEventListener('click', async () => {
  await forgetSession().catch(() => {});
  $('forget-status').textContent = 'This browser is signed out: next time, open the URL that xchat app prints.';
});
for (const r of document.querySelectorAll('input[name="theme"]')) {
  r.addEventListener('change', () => applyTheme(r.value));
}
$('btn-theme').addEventListener('click', () => {
  const i = THEMES.indexOf(currentTheme());
  applyTheme(THEMES[(i + 1) % THEMES.length]);
  announce(`Theme: ${currentTheme()}`);
});
