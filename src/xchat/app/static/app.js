// XChat web app: a view over the local `xchat app` process. Keys never reach this page.
// Rules: every /api/ call carries the per-launch secret in X-XChat-Secret; peer-provided
// text is only ever put into the DOM with textContent (no HTML-parsing sink anywhere).
'use strict';

(() => {
  const SECRET_KEY = 'xchat-secret';
  const THEME_KEY = 'xchat-theme';
  const $ = (id) => document.getElementById(id);

  // --- the secret: from the URL fragment into sessionStorage, then out of the URL ---------
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
  const secret = takeSecret();

  // --- tiny DOM helper: strings become text nodes, never markup --------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }
  function show(node, visible) { node.hidden = !visible; }

  // --- API -------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(method, path, body) {
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
  const get = (path) => api('GET', path);
  const post = (path, body) => api('POST', path, body);

  // --- announcements for screen readers ---------------------------------------------------
  function announce(text) {
    const live = $('live');
    live.textContent = '';
    setTimeout(() => { live.textContent = text; }, 30);
  }
  function alertText(text) {
    const a = $('alert');
    a.textContent = '';
    setTimeout(() => { a.textContent = text; }, 30);
  }

  // --- theme -----------------------------------------------------------------------------
  const THEMES = ['system', 'light', 'dark'];
  function applyTheme(theme) {
    if (!THEMES.includes(theme)) theme = 'system';
    if (theme === 'system') document.documentElement.removeAttribute('data-theme');
    else document.documentElement.setAttribute('data-theme', theme);
    localStorage.setItem(THEME_KEY, theme);
    $('btn-theme').setAttribute('aria-label', `Theme: ${theme}. Change theme`);
    $('btn-theme').title = `Theme: ${theme}`;
    $('theme-icon').textContent = theme === 'light' ? '☀' : theme === 'dark' ? '☾' : '◐';
    for (const r of document.querySelectorAll('input[name="theme"]')) r.checked = r.value === theme;
  }
  function currentTheme() { return localStorage.getItem(THEME_KEY) || 'system'; }

  // --- state -----------------------------------------------------------------------------
  // A conversation id ("conv") is a contact's address or "group:<32 hex>" for a group.
  const state = {
    account: null,
    convs: [],
    current: null,        // conv id of the open conversation
    contact: null,        // the open 1:1 contact, or null
    group: null,          // the open group, or null
    messages: [],
    previews: new Map(),  // message id -> blob: URL of a decrypted image
    saved: new Map(),     // message id -> file name it was saved under
    transfers: new Map(), // transfer id -> {label, done, total}
    defaultServer: '',
  };
  const isGroup = (conv) => typeof conv === 'string' && conv.startsWith('group:');

  function displayName(c) {
    if (!c) return '';
    return c.handle ? `@${c.handle}` : shortAddr(c.address);
  }
  function shortAddr(a) { return a && a.length > 20 ? `${a.slice(0, 10)}…${a.slice(-6)}` : (a || ''); }
  function fmtTime(ms) {
    const d = new Date(ms);
    const now = new Date();
    if (d.toDateString() === now.toDateString()) {
      return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    }
    return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
  }
  function fmtSize(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }
  function senderName(m) {
    return m.sender_handle ? `@${m.sender_handle}` : shortAddr(m.sender);
  }
  function preview(m) {
    if (!m) return 'No messages yet';
    const who = m.direction === 'out' ? 'You: ' : isGroup(m.conv) ? `${senderName(m)}: ` : '';
    if (m.kind === 'text') return who + m.text;
    if (m.kind === 'file') return `${who}${m.file.name} (file)`;
    return `${who}(unsupported message)`;
  }

  // --- views -----------------------------------------------------------------------------
  function showOnly(id) {
    for (const v of ['view-loading', 'view-locked', 'view-onboarding', 'view-app']) show($(v), v === id);
  }
  function showLocked() { showOnly('view-locked'); }

  async function boot() {
    applyTheme(currentTheme());
    if (!secret) { showLocked(); return; }
    let st;
    try { st = await get('/api/state'); } catch (e) {
      if (e.status !== 401) { showOnly('view-loading'); $('view-loading').firstElementChild.textContent = e.message; }
      return;
    }
    state.defaultServer = st.default_server || '';
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
    setConn(st.connected);
    connectEvents();
  }

  // --- onboarding ------------------------------------------------------------------------
  function startOnboarding() {
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
    if (handle && !/^[A-Za-z][A-Za-z0-9_]{2,31}$/.test(handle)) { $('onboarding-error').textContent = 'A handle is 3–32 letters, digits or _, starting with a letter.'; $('create-handle').focus(); return; }
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
    const phrase = $('restore-phrase').value.trim();
    $('onboarding-error').textContent = '';
    if (!/^https?:\/\//.test(server)) { $('onboarding-error').textContent = 'Enter the server URL.'; return; }
    if (phrase.split(/\s+/).length !== 24) { $('onboarding-error').textContent = 'The recovery phrase has 24 words.'; return; }
    busy('Restoring your account…');
    try {
      const r = await post('/api/account/restore', { server, phrase });
      state.account = r.account;
      busy('');
      $('restore-phrase').value = '';
      enterApp();
    } catch (err) {
      busy('');
      $('onboarding-error').textContent = err.message;
    }
  });

  let confirmIndices = [];
  function showPhrase(words, indices) {
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

  // --- the app ---------------------------------------------------------------------------
  function enterApp() {
    showOnly('view-app');
    renderWhoami();
    refreshConversations();
    $('newchat-input').focus();
  }

  function renderWhoami() {
    const me = state.account;
    $('whoami').textContent = me && me.handle
      ? `You are @${me.handle}. Friends can reach you by that handle.`
      : 'You have no handle yet: set one in Settings so friends can find you.';
  }

  function setConn(connected) {
    const c = $('conn-status');
    if (connected === true) { c.dataset.state = 'online'; c.textContent = 'Connected'; }
    else if (connected === false) { c.dataset.state = 'offline'; c.textContent = 'Offline — reconnecting'; }
    else { delete c.dataset.state; c.textContent = ''; }
  }

  async function refreshConversations() {
    let r;
    try { r = await get('/api/conversations'); } catch (e) { return; }
    state.convs = r.conversations;
    renderConversations();
  }

  function convName(c) {
    return c.kind === 'group' ? c.name : displayName(c);
  }

  function renderConversations() {
    const list = $('conv-list');
    show($('conv-list-empty'), state.convs.length === 0);
    list.replaceChildren(...state.convs.map((c) => {
      const name = convName(c);
      const last = c.last;
      const kind = c.kind === 'group' ? `group with ${c.members.length} members` : '';
      const label = [name, kind, c.unread ? `${c.unread} unread` : '', last ? `last message: ${preview(last)}` : '']
        .filter(Boolean).join(', ');
      const btn = el('button', {
        type: 'button', class: `conv-item ${c.kind}`, 'data-conv': c.conv,
        'aria-current': c.conv === state.current ? 'true' : null, 'aria-label': label,
        onclick: () => openConversation(c.conv),
      },
      el('span', { class: 'conv-name' },
        c.kind === 'group' ? el('span', { class: 'group-icon', 'aria-hidden': 'true', text: '#' }) : null,
        name),
      el('span', { class: 'conv-time', text: last ? fmtTime(last.ts_ms) : '' }),
      el('span', { class: 'conv-last', text: c.left ? 'You are no longer a member' : preview(last) }),
      c.unread ? el('span', { class: 'unread', text: String(c.unread), 'aria-hidden': 'true' }) : el('span'));
      return el('li', {}, btn);
    }));
  }

  $('form-newchat').addEventListener('submit', async (e) => {
    e.preventDefault();
    const to = $('newchat-input').value.trim();
    $('newchat-error').textContent = '';
    if (!to) { $('newchat-input').focus(); return; }
    try {
      const r = await post('/api/contacts/resolve', { to });
      $('newchat-input').value = '';
      await refreshConversations();
      await openConversation(r.contact.address);
    } catch (err) {
      $('newchat-error').textContent = err.status === 404 ? `No account found for ${to}.` : err.message;
    }
  });

  async function openConversation(conv) {
    if (conv !== state.current) {
      state.messages = [];
      $('messages').replaceChildren();
    }
    state.current = conv;
    $('view-app').classList.add('show-conv');
    show($('conv-empty'), false);
    show($('conv-active'), true);
    $('composer-error').textContent = '';
    renderConversations();
    await loadMessages(true);
    $('composer-input').focus();
  }

  $('btn-back').addEventListener('click', () => {
    $('view-app').classList.remove('show-conv');
    const conv = state.current || '';
    state.current = null;
    renderConversations();
    (document.querySelector(`.conv-item[data-conv="${CSS.escape(conv)}"]`) || $('newchat-input')).focus();
  });

  let loadGen = 0;
  async function loadMessages(scrollToEnd) {
    const conv = state.current;
    if (!conv) return;
    const gen = ++loadGen;  // only the newest request may render (responses can cross)
    let r;
    try { r = await get(`/api/messages?peer=${encodeURIComponent(conv)}`); } catch (e) {
      $('composer-error').textContent = e.message; return;
    }
    if (state.current !== conv || gen !== loadGen) return;
    state.contact = r.contact || null;
    state.group = r.group || null;
    state.messages = r.messages;
    renderHeader();
    renderMessages(scrollToEnd);
    const last = r.messages[r.messages.length - 1];
    const entry = state.convs.find((c) => c.conv === conv);
    if (last && last.direction === 'in' && document.visibilityState === 'visible') {
      await post('/api/conversations/read', { peer: conv }).catch(() => {});
      if (entry && entry.unread) { entry.unread = 0; renderConversations(); }
    }
  }

  function memberName(m) {
    return m.me ? 'You' : (m.handle ? `@${m.handle}` : shortAddr(m.address));
  }

  function renderHeader() {
    const c = state.contact;
    const g = state.group;
    show($('btn-safety'), Boolean(c));
    show($('btn-members'), Boolean(g));
    show($('conv-verified'), Boolean(c && c.verified && !c.identity_changed));
    $('composer-input').disabled = Boolean(g && g.left);
    $('btn-send').disabled = Boolean(g && g.left);
    $('btn-attach').disabled = Boolean(g && g.left);
    $('conv-subtitle').classList.toggle('mono', !g);
    $('conv-subtitle').classList.toggle('group', Boolean(g));
    if (g) {
      $('conv-title').textContent = g.name;
      $('conv-subtitle').textContent = g.left
        ? 'You are no longer a member of this group'
        : `${g.members.length} members: ${g.members.map(memberName).join(', ')}`;
      show($('identity-warning'), false);
      return;
    }
    $('conv-title').textContent = displayName(c);
    $('conv-subtitle').textContent = c.address;
    const warn = $('identity-warning');
    if (c.identity_changed) {
      $('identity-warning-text').textContent = c.verified
        ? `The safety number with ${displayName(c)} has changed. Sending is blocked until you compare the new number and verify again.`
        : `The safety number with ${displayName(c)} has changed. This can mean they reinstalled XChat — or that someone is intercepting. Compare the new number.`;
      show(warn, true);
    } else {
      show(warn, false);
    }
  }

  function statusLabel(s) {
    return { sending: 'Sending…', sent: 'Sent', delivered: 'Delivered', received: '', failed: 'Not sent' }[s] ?? s;
  }

  function renderMessages(scrollToEnd) {
    const box = $('messages');
    const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    let lastDay = '';
    let lastSender = null;
    const items = [];
    for (const m of state.messages) {
      const day = new Date(m.ts_ms).toDateString();
      if (day !== lastDay) {
        lastDay = day;
        lastSender = null;
        items.push(el('li', { class: 'day', 'aria-hidden': 'true', text: new Date(m.ts_ms).toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric' }) }));
      }
      const from = m.direction === 'in' ? m.sender : '';
      items.push(renderMessage(m, from !== lastSender));
      lastSender = from;
    }
    box.replaceChildren(...items);
    if (scrollToEnd || nearEnd) box.scrollTop = box.scrollHeight;
  }

  function renderMessage(m, firstOfRun) {
    const inGroup = isGroup(m.conv);
    const who = m.direction === 'out' ? 'You' : inGroup ? senderName(m) : displayName(state.contact);
    let body;
    if (m.kind === 'text') {
      body = el('div', { class: 'bubble', text: m.text });
    } else if (m.kind === 'file') {
      body = el('div', { class: 'bubble file-box' }, renderFile(m));
    } else {
      body = el('div', { class: 'bubble muted', text: 'This message type is not supported yet.' });
    }
    const sender = inGroup && m.direction === 'in' && firstOfRun
      ? el('span', { class: 'sender', 'aria-hidden': 'true', text: who }) : null;
    const status = m.direction === 'out'
      ? el('span', { class: 'status', 'data-status': m.status, text: ` · ${statusLabel(m.status)}${m.status === 'delivered' ? ' ✓✓' : m.status === 'sent' ? ' ✓' : ''}` })
      : null;
    const time = el('time', { datetime: new Date(m.ts_ms).toISOString(), text: fmtTime(m.ts_ms) });
    return el('li', { class: `msg ${m.direction}`, 'data-id': m.id, 'data-sender': m.sender, 'aria-label': `${who}, ${fmtTime(m.ts_ms)}` },
      sender, body, el('div', { class: 'meta' }, time, status));
  }

  // --- files: decrypted locally by the app process, on demand (images automatically) ----
  const AUTO_PREVIEW_BYTES = 10 * 1024 * 1024;

  function renderFile(m) {
    const f = m.file;
    const frag = document.createDocumentFragment();
    const url = state.previews.get(m.id);
    if (url) {
      frag.append(el('img', { src: url, alt: `Image: ${f.name}` }));
    } else if (f.image && f.size <= AUTO_PREVIEW_BYTES) {
      queuePreview(m);
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

  // --- composing -------------------------------------------------------------------------
  const input = $('composer-input');
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  input.addEventListener('input', () => {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 144)}px`;
  });
  $('composer').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || !state.current) return;
    $('composer-error').textContent = '';
    const btn = $('btn-send');
    btn.disabled = true;
    // Show it at once as "Sending…"; the reload after the server's ack replaces it.
    const pending = renderMessage({ id: '', peer: state.current, conv: state.current, sender: null, direction: 'out', ts_ms: Date.now(), status: 'sending', kind: 'text', text, file: null }, false);
    pending.classList.add('pending');
    $('messages').append(pending);
    $('messages').scrollTop = $('messages').scrollHeight;
    try {
      await post('/api/messages/send', { to: state.current, text });
      input.value = '';
      input.style.height = 'auto';
      await loadMessages(true);
      refreshConversations();
    } catch (err) {
      pending.remove();
      $('composer-error').textContent = err.status === 409 && state.contact && state.contact.identity_changed
        ? 'Not sent: the safety number changed. Compare it and mark it verified first.'
        : `Not sent: ${err.message}`;
    } finally {
      btn.disabled = false;
      input.focus();
    }
  });

  $('btn-attach').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', async () => {
    const file = $('file-input').files[0];
    $('file-input').value = '';
    if (!file || !state.current) return;
    await sendFile(file, state.current);
  });

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

  async function sendFile(file, to) {
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

  // --- safety numbers --------------------------------------------------------------------
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

  // --- settings --------------------------------------------------------------------------
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
    try {
      const r = await post('/api/account/handle', { handle });
      state.account = r.account;
      $('handle-status').textContent = `Saved: you are @${r.account.handle}`;
      renderWhoami();
    } catch (err) { $('handle-status').textContent = err.message; }
  });
  for (const r of document.querySelectorAll('input[name="theme"]')) {
    r.addEventListener('change', () => applyTheme(r.value));
  }
  $('btn-theme').addEventListener('click', () => {
    const i = THEMES.indexOf(currentTheme());
    applyTheme(THEMES[(i + 1) % THEMES.length]);
    announce(`Theme: ${currentTheme()}`);
  });

  // --- groups ------------------------------------------------------------------------------
  function splitMembers(text) {
    return text.split(/[\s,]+/).map((m) => m.trim()).filter(Boolean);
  }

  $('btn-newgroup').addEventListener('click', () => {
    $('group-error').textContent = '';
    $('form-group').reset();
    $('dlg-group').showModal();
    $('group-name').focus();
  });
  $('btn-group-cancel').addEventListener('click', () => $('dlg-group').close());
  $('form-group').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('group-name').value.trim();
    const members = splitMembers($('group-members').value);
    if (!name) { $('group-error').textContent = 'Give the group a name.'; $('group-name').focus(); return; }
    if (!members.length) { $('group-error').textContent = 'Add at least one member by @handle.'; $('group-members').focus(); return; }
    const btn = $('btn-group-create');
    btn.disabled = true;
    $('group-error').textContent = '';
    try {
      const r = await post('/api/groups/create', { name, members });
      $('dlg-group').close();
      announce(`Group ${name} created`);
      await refreshConversations();
      await openConversation(r.group.conv);
    } catch (err) {
      $('group-error').textContent = err.status === 404 ? `${err.message}. Check the @handles.` : err.message;
    } finally {
      btn.disabled = false;
    }
  });

  function renderMembers(g) {
    state.group = g;
    const admin = g.admin && !g.left;
    $('members-title').textContent = `${g.name}: ${g.members.length} members`;
    $('members-note').textContent = g.left
      ? 'You are no longer a member of this group.'
      : admin ? 'You are an admin: you can add and remove members and rename the group.'
        : 'Only admins can add or remove members or rename the group.';
    $('members-list').replaceChildren(...g.members.map((m) => el('li', { 'data-address': m.address },
      el('span', { class: 'member-name' },
        el('span', { text: memberName(m) }),
        el('span', { class: 'mono small muted member-addr', text: shortAddr(m.address) })),
      el('span', { class: 'row' },
        m.admin ? el('span', { class: 'badge admin', text: 'Admin' }) : null,
        admin && !m.me ? el('button', {
          type: 'button', class: 'small-btn danger', 'aria-label': `Remove ${memberName(m)}`,
          onclick: () => changeMembers({ remove: [m.address] }, `${memberName(m)} removed`),
        }, 'Remove') : null))));
    show($('members-admin'), admin);
    $('rename-input').value = g.name;
    renderHeader();
  }

  async function openMembers() {
    if (!state.group) return;
    if (!$('dlg-members').open) { $('members-error').textContent = ''; $('members-add').value = ''; }
    try {
      const r = await get(`/api/groups/info?group=${encodeURIComponent(state.group.id)}`);
      renderMembers(r.group);
    } catch (err) { $('composer-error').textContent = err.message; return; }
    if (!$('dlg-members').open) $('dlg-members').showModal();
  }

  async function changeMembers(body, done) {
    $('members-error').textContent = '';
    const g = state.group;
    try {
      const r = await post('/api/groups/members', { group: g.id, ...body });
      renderMembers(r.group);
      announce(done);
      refreshSoon();
    } catch (err) { $('members-error').textContent = err.message; }
  }

  $('btn-members').addEventListener('click', openMembers);
  $('btn-members-close').addEventListener('click', () => $('dlg-members').close());
  $('form-members-add').addEventListener('submit', async (e) => {
    e.preventDefault();
    const add = splitMembers($('members-add').value);
    if (!add.length) { $('members-add').focus(); return; }
    await changeMembers({ add }, `Added ${add.join(', ')}`);
    if (!$('members-error').textContent) $('members-add').value = '';
  });
  $('form-rename').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('rename-input').value.trim();
    if (!name || !state.group || name === state.group.name) return;
    $('members-error').textContent = '';
    try {
      const r = await post('/api/groups/rename', { group: state.group.id, name });
      renderMembers(r.group);
      announce(`Group renamed to ${name}`);
      refreshSoon();
    } catch (err) { $('members-error').textContent = err.message; }
  });

  // --- live events (Server-Sent Events over fetch, so the secret stays in a header) ------
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.current) loadMessages(false).then(refreshSoon);
  });

  let backoff = 500;
  async function connectEvents() {
    try {
      const res = await fetch('/api/events', { headers: { 'X-XChat-Secret': secret }, cache: 'no-store', credentials: 'omit' });
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
              try { onEvent(JSON.parse(line.slice(6))); } catch (e) { /* ignore one bad event */ }
            }
          }
        }
      }
    } catch (e) { /* reconnect below */ }
    setConn(false);
    setTimeout(connectEvents, backoff);
    backoff = Math.min(backoff * 2, 10000);
  }

  const refreshSoon = (() => {
    let t = null;
    return () => { if (t) return; t = setTimeout(() => { t = null; refreshConversations(); }, 150); };
  })();

  function onEvent(ev) {
    switch (ev.type) {
      case 'hello': if (ev.connected !== null && ev.connected !== undefined) setConn(ev.connected); break;
      case 'connection': setConn(ev.connected); break;
      case 'drained': setConn(true); break;
      case 'message': {
        const from = ev.handle ? `@${ev.handle}` : shortAddr(ev.peer);
        const where = ev.group ? ` in ${ev.group.name}` : '';
        const what = ev.file ? `file ${ev.file.name}` : ev.text;
        if (document.visibilityState !== 'visible' || ev.conv !== state.current) {
          announce(`New message from ${from}${where}: ${what}`);
        } else {
          announce(`${from}: ${what}`);
        }
        if (ev.conv === state.current) loadMessages(false);
        refreshSoon();
        break;
      }
      case 'receipt':
        if (ev.conv === state.current) loadMessages(false);
        refreshSoon();
        break;
      case 'identity_changed': {
        const who = ev.handle ? `@${ev.handle}` : shortAddr(ev.peer);
        alertText(`Safety number with ${who} changed.`);
        if (ev.conv === state.current) loadMessages(false);
        refreshSoon();
        break;
      }
      case 'group':
        if (ev.left) alertText(`You are no longer a member of ${ev.name}.`);
        if (ev.conv === state.current) {
          loadMessages(false);
          if ($('dlg-members').open) openMembers();
        }
        refreshSoon();
        break;
      case 'file_progress': {
        const key = ev.direction === 'down' ? `down-${ev.transfer}` : ev.transfer;
        const t = state.transfers.get(key);
        if (!t) break;
        t.done = ev.done; t.total = ev.total;
        if (ev.direction === 'down') updateFileProgress(ev.transfer); else renderTransfers();
        break;
      }
      default:
        if (state.account) refreshSoon();
    }
  }

  boot();
})();
