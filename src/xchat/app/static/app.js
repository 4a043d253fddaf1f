// XChat web app: a view over the local `xchat app` process. Keys never reach this page.
// Rules: every /api/ call carries the per-launch secret in X-XChat-Secret; peer-provided
// text is only ever put into the DOM with textContent (no HTML-parsing sink anywhere).
//
// This is the entry module (index.html loads it with type="module"). Each feature lives
// in its own module and plugs in through the hooks in state.js; a new feature adds its
// module with one import line below.
import { canAuthenticate, ensureSession, get, post } from './api.js';
import { $, showLocked, showOnly } from './dom.js';
import { state } from './state.js';
import { enterApp, setConn } from './conversations.js';
import { connectEvents } from './events.js';
import { showPhrase, startOnboarding } from './onboarding.js';
import { applyTheme, currentTheme } from './settings.js';
import './compose.js';
import './files-ui.js';
import './groups-ui.js';
import './notify.js';
import './safety.js';
import './backup.js';
// Feature modules (one line each):
import './calls.js';
import './rich.js';
import './devices.js';

async function boot() {
  applyTheme(currentTheme());
  if (!canAuthenticate()) { showLocked(); return; }
  await ensureSession();
  let st;
  try { st = await get('/api/state'); } catch (e) {
    if (e.status !== 401) { showOnly('view-loading'); $('view-loading').firstElementChild.textContent = e.message; }
    return;
  }
  state.defaultServer = st.default_server || '';
  state.restored = Boolean(st.restored);
  if (!st.account) {
    startOnboarding();
  } else if (st.phrase_pending) {
    state.account = st.account;
    showOnly('view-onboarding');
    const p = await post('/api/account/phrase', {});
    showPhrase(p.recovery_phrase, p.confirm_indices);
  } else {
    state.account = st.account;
    enterApp();
  }
  setConn(st.connected, st.displaced);
  connectEvents();
}

boot();
