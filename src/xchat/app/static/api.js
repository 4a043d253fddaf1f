// The page's only way to the local `xchat app` process. Every /api/ call carries the
// per-launch secret in X-XChat-Secret, or a browser session: an HttpOnly cookie the page
// cannot read plus X-XChat-Key from localStorage (app/security.py lists every check the
// server makes and why both halves are needed).
import { showLocked } from './dom.js';

const SECRET_KEY = 'xchat-secret';
const SESSION_KEY = 'xchat-key';

// The secret: only from the URL fragment (never a ?query: those reach history and logs),
// into sessionStorage, then out of the URL.
function takeSecret() {
  const frag = new URLSearchParams(location.hash.slice(1));
  const given = frag.get('secret');
  if (given) {
    sessionStorage.setItem(SECRET_KEY, given);
    history.replaceState(null, '', '/');
  }
  return { secret: sessionStorage.getItem(SECRET_KEY), fresh: Boolean(given) };
}
const taken = takeSecret();
export const secret = taken.secret;
let sessionKey = localStorage.getItem(SESSION_KEY);

export function authHeaders() {
  const h = {};
  if (secret) h['X-XChat-Secret'] = secret;
  if (sessionKey) h['X-XChat-Key'] = sessionKey;
  return h;
}
export const canAuthenticate = () => Boolean(secret || sessionKey);

/** With a fresh secret from the URL, sign this browser in for later visits. */
export async function ensureSession() {
  if (!taken.fresh) return;
  try {
    const r = await api('POST', '/api/session', {});
    sessionKey = r.key;
    localStorage.setItem(SESSION_KEY, sessionKey);
  } catch (e) { /* cookies refused: this tab still works with the secret */ }
}

/** Sign this browser out: the next visit needs the terminal's URL again. */
export async function forgetSession() {
  try { await api('POST', '/api/session/forget', {}); } finally {
    localStorage.removeItem(SESSION_KEY);
    sessionKey = null;
  }
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(method, path, body, extra) {
  const headers = authHeaders();
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', referrerPolicy: 'no-referrer', ...(extra || {}) };
  if (method === 'POST') {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body || {});
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'The XChat app process is not reachable. Is `xchat app` still running?');
  }
  if (res.status === 401) {
    if (sessionKey) { localStorage.removeItem(SESSION_KEY); sessionKey = null; }
    showLocked();
    throw new ApiError(401, 'This tab has no valid access key.'); }
  const ct = res.headers.get('content-type') || '';
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    if (ct.startsWith('application/json')) {
      try { msg = (await res.json()).error || msg; } catch (e) { /* keep */ }
    }
    throw new ApiError(res.status, msg);
  }
  if (ct.startsWith('application/json')) return res.json();
  return res.blob();
}
export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
