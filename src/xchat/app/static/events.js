// Live events from the app process: Server-Sent Events read through fetch (so the secret
// stays in a header), dispatched to the modules that registered for each type (state.js).
import { authHeaders } from './api.js';
import { showLocked } from './dom.js';
import { emit } from './state.js';

let backoff = 500;

export async function connectEvents() {
  try {
    const res = await fetch('/api/events', { headers: authHeaders(), cache: 'no-store', credentials: 'same-origin' });
    if (res.status === 401) { showLocked(); return; }
    if (!res.ok || !res.body) throw new Error('events unavailable');
    backoff = 500;
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const chunk = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of chunk.split('\n')) {
          if (line.startsWith('data: ')) {
            let ev;
            try { ev = JSON.parse(line.slice(6)); } catch (e) { continue; /* ignore one bad event */ }
            dispatch(ev);
          }
        }
      }
    }
  } catch (e) { /* reconnect below */ }
  emit('events-lost');
  setTimeout(connectEvents, backoff);
  backoff = Math.min(backoff * 2, 10000);
}

function dispatch(ev) {
  if (!emit(`event:${ev.type}`, ev)) emit('event:unhandled', ev);
}
