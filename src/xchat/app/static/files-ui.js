// Files: sent encrypted through the app process; received ones downloaded, verified and
// decrypted locally by it on demand, shown from blob: URLs. Images download by themselves
// only from people you write to (m.file.auto, decided by the app process); from anyone
// else they wait for a click, since a download tells the sender's relay you opened the chat.
import { get, post } from './api.js';
import { $, announce, el, fmtSize } from './dom.js';
import { on, renderers, state } from './state.js';
import { loadMessages, refreshConversations, renderMessages } from './conversations.js';

const AUTO_PREVIEW_BYTES = 10 * 1024 * 1024;
export const MAX_FILE_BYTES = 25 * 1024 * 1024;  // the app's upload limit (app/files.py)

function renderFile(m) {
  const f = m.file;
  const frag = document.createDocumentFragment();
  const url = state.previews.get(m.id);
  if (url) {
    frag.append(el('button', { type: 'button', class: 'image-btn', 'aria-label': `View ${f.name} full size`, onclick: () => viewImage(url, f.name) },
      el('img', { src: url, alt: `Image: ${f.name}` })));
  } else if (f.image && f.auto && f.size <= AUTO_PREVIEW_BYTES) {
    queuePreview(m);
  } else if (f.image) {
    frag.append(el('button', { type: 'button', class: 'small-btn show-image-btn', onclick: () => queuePreview(m) }, 'Show image'));
  }
  const t = state.transfers.get(`down-${m.id}`);
  const saved = state.saved.get(m.id);
  frag.append(
    el('span', { class: 'file-meta' },
      el('span', { class: 'file-name', text: f.name }),
      el('span', { class: 'file-size small', text: fmtSize(f.size) })),
    el('progress', { class: 'file-progress', hidden: !t, max: String(f.size || 1), value: String(t ? t.done : 0), 'aria-label': `Downloading ${f.name}` }),
    el('span', { class: 'row' },
      el('button', { type: 'button', class: 'small-btn save-btn', 'aria-label': `Save ${f.name}`, onclick: () => saveFile(m) }, 'Save'),
      saved ? el('span', { class: 'saved small', text: `Saved as ${saved}` }) : null),
  );
  return frag;
}
renderers.set('file', (m) => el('div', { class: 'bubble file-box' }, renderFile(m)));

function updateFileProgress(id) {
  const p = document.querySelector(`.msg[data-id="${CSS.escape(id)}"] .file-progress`);
  const t = state.transfers.get(`down-${id}`);
  if (!p) return;
  p.hidden = !t;
  if (t) { p.max = t.total || 1; p.value = t.done || 0; }
}

const fetching = new Map();  // message id -> promise of /api/files/fetch
function fetchFile(m) {
  let p = fetching.get(m.id);
  if (!p) {
    const key = `down-${m.id}`;
    state.transfers.set(key, { label: `Downloading ${m.file.name}`, done: 0, total: m.file.size });
    p = post('/api/files/fetch', { peer: m.peer, message_id: m.id })
      .finally(() => { state.transfers.delete(key); updateFileProgress(m.id); });
    fetching.set(m.id, p);
    p.catch(() => fetching.delete(m.id));
    setTimeout(() => updateFileProgress(m.id), 0);
  }
  return p;
}

const previewing = new Set();
async function queuePreview(m) {
  if (previewing.has(m.id)) return;
  previewing.add(m.id);
  try {
    const info = await fetchFile(m);
    if (!info.image) return;
    const blob = await get(info.url);
    state.previews.set(m.id, URL.createObjectURL(new Blob([blob], { type: info.image })));
    if (state.messages.some((x) => x.id === m.id)) renderMessages(false);
  } catch (e) {
    previewing.delete(m.id);  // a preview is optional; Save still works (and retries)
  }
}

async function saveFile(m) {
  try {
    const info = await fetchFile(m);
    const blob = await get(info.url);
    const url = URL.createObjectURL(new Blob([blob], { type: 'application/octet-stream' }));
    const a = el('a', { href: url, download: info.name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    state.saved.set(m.id, info.saved_as);
    renderMessages(false);
    announce(`Saved ${info.name}`);
  } catch (err) {
    $('composer-error').textContent = `Could not save ${m.file.name}: ${err.message}`;
    renderMessages(false);
  }
}

// --- sending ---------------------------------------------------------------------------------
function renderTransfers() {
  const box = $('transfers');
  box.replaceChildren(...[...state.transfers.entries()].filter(([id]) => !id.startsWith('down-')).map(([id, t]) => el('div', { class: 'transfer', 'data-transfer': id },
    el('span', { text: t.label }),
    el('progress', { max: String(t.total || 1), value: String(t.done || 0), 'aria-label': t.label }))));
}

function base64Of(buffer) {
  const bytes = new Uint8Array(buffer);
  let out = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(out);
}

function viewImage(url, name) {
  const dlg = $('dlg-image');
  $('image-full').src = url;
  $('image-full').alt = `Image: ${name}`;
  $('image-title').textContent = name;
  dlg.showModal();
}
$('btn-image-close').addEventListener('click', () => $('dlg-image').close());
$('dlg-image').addEventListener('click', (e) => { if (e.target === $('dlg-image')) $('dlg-image').close(); });

export async function sendFile(file, to) {
  if (file.size > MAX_FILE_BYTES) {
    // Said before anything is read or uploaded.
    $('composer-error').textContent = `${file.name} is ${(file.size / 1048576).toFixed(1)} MiB: files can be up to 25 MiB.`;
    return;
  }
  const transfer = crypto.getRandomValues(new Uint32Array(2)).join('');
  state.transfers.set(transfer, { label: `Encrypting and sending ${file.name}`, done: 0, total: file.size });
  renderTransfers();
  announce(`Sending ${file.name}`);
  try {
    const data = base64Of(await file.arrayBuffer());
    await post('/api/files/send', { to, name: file.name, content_type: file.type || null, data, transfer });
    announce(`Sent ${file.name}`);
    await loadMessages(true);
    refreshConversations();
  } catch (err) {
    $('composer-error').textContent = `File not sent: ${err.message}`;
  } finally {
    state.transfers.delete(transfer);
    renderTransfers();
  }
}

$('btn-attach').addEventListener('click', () => $('file-input').click());
$('file-input').addEventListener('change', async () => {
  const file = $('file-input').files[0];
  $('file-input').value = '';
  if (!file || !state.current) return;
  await sendFile(file, state.current);
});

on('event:file_progress', (ev) => {
  const key = ev.direction === 'down' ? `down-${ev.transfer}` : ev.transfer;
  const t = state.transfers.get(key);
  if (!t) return;
  t.done = ev.done; t.total = ev.total;
  if (ev.direction === 'down') updateFileProgress(ev.transfer); else renderTransfers();
});
