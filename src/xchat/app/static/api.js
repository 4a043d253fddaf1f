// The page's only way to the local `xchat app` process. Every /api/ call carries the
// per-launch secret in X-XChat-Secret (app/security.py lists every check the server makes).
import { showLocked } from './dom.js';

const SECRET_KEY = 'xchat-secret';

// The secret: from the URL fragment into sessionStorage, then out of the URL.
function takeSecret() {
  const frag = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const given = frag.get('secret') || query.get('s');
  if (given) {
    sessionStorage.setItem(SECRET_KEY, given);
    history.replaceState(null, '', '/');
  }
  return sessionStorage.getItem(SECRET_KEY);
}
export const secret = takeSecret();

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(method, path, body) {
  const headers = { 'X-XChat-Secret': secret || '' };
  const init = { method, headers, credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer' };
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
  if (res.status === 401) { showLocked(); throw new ApiError(401, 'This tab has no valid access key.'); }
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
