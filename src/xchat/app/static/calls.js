// Voice and video calls in the browser (PROTOCOL.md Part IX §8).
//
// The page's own WebRTC holds the media keys of the running call (its RTCPeerConnection
// makes the DTLS certificate and the SRTP keys and never shows them to anyone). The local
// app process (app/calls.py) holds the identity and session keys: it carries our SDP and
// ICE candidates as end-to-end encrypted call signals, so the DTLS fingerprint the peer
// checks is the one this page made, authenticated by the ratchet.
//
// Screens: incoming (ringtone, accept / decline), outgoing (ringing), in call (mute,
// camera on/off, hang up, duration, the peer's safety-number status). Calls appear in the
// conversation as entries (kind "call"). Settings gets a "relay calls" switch.
import { get, post } from './api.js';
import { $, alertText, announce, el, show } from './dom.js';
import { displayName, isGroup, on, renderers, state } from './state.js';
import { loadMessages, refreshConversations } from './conversations.js';

const RELAY_KEY = 'xchat-calls-relay-only';
const GATHER_MS = 2000;  // wait this long for ICE candidates to go inside the SDP

let current = null;  // the one call of this page (see newCall)
let ring = null;     // the ringtone (WebAudio), while an incoming call rings

// --- the DOM: styles, header buttons, the call screen, the settings switch -------------------
document.head.append(el('link', { rel: 'stylesheet', href: '/static/calls.css' }));

const btnAudio = el('button', { type: 'button', id: 'btn-call-audio', hidden: true, 'aria-label': 'Voice call', onclick: () => startCall(false) }, 'Call');
const btnVideo = el('button', { type: 'button', id: 'btn-call-video', hidden: true, 'aria-label': 'Video call', onclick: () => startCall(true) }, 'Video');
$('btn-safety').before(btnAudio, btnVideo);

const screen = el('section', { id: 'call-screen', class: 'call-screen', hidden: true, role: 'dialog', 'aria-labelledby': 'call-peer', 'aria-live': 'polite' },
  el('div', { class: 'call-top' },
    el('h2', { id: 'call-peer' }),
    el('p', { id: 'call-status', class: 'call-status', role: 'status' }),
    el('p', { id: 'call-safety', class: 'call-safety' })),
  el('div', { class: 'call-media' },
    el('video', { id: 'call-remote', autoplay: true, playsinline: true }),
    el('video', { id: 'call-local', autoplay: true, playsinline: true, muted: true })),
  el('p', { id: 'call-error', class: 'error', role: 'alert' }),
  el('div', { class: 'call-buttons' },
    el('button', { type: 'button', id: 'btn-call-accept', class: 'primary', onclick: accept }, 'Accept'),
    el('button', { type: 'button', id: 'btn-call-decline', class: 'danger', onclick: decline }, 'Decline'),
    el('button', { type: 'button', id: 'btn-call-mute', 'aria-pressed': 'false', onclick: toggleMute }, 'Mute'),
    el('button', { type: 'button', id: 'btn-call-camera', 'aria-pressed': 'false', onclick: toggleCamera }, 'Camera off'),
    el('button', { type: 'button', id: 'btn-call-hangup', class: 'danger', onclick: hangup }, 'Hang up'),
    el('button', { type: 'button', id: 'btn-call-close', onclick: closeScreen }, 'Close')));
document.body.append(screen);
$('call-local').muted = true;

const relaySwitch = el('input', { type: 'checkbox', id: 'set-relay-only' });
relaySwitch.checked = localStorage.getItem(RELAY_KEY) === '1';
relaySwitch.addEventListener('change', () => {
  localStorage.setItem(RELAY_KEY, relaySwitch.checked ? '1' : '0');
  announce(relaySwitch.checked ? 'Calls go through the relay' : 'Calls connect directly when they can');
});
$('btn-settings-close').closest('.row').before(el('fieldset', { class: 'calls-choice' },
  el('legend', { text: 'Calls' }),
  el('label', {}, relaySwitch, ' Relay calls through the server (the other person never learns your IP address)')));

on('conversation-opened', (conv) => {
  const oneToOne = Boolean(conv) && !isGroup(conv);
  show(btnAudio, oneToOne);
  show(btnVideo, oneToOne);
});

// --- call entries in the conversation ------------------------------------------------------
const OUTCOME = {
  ended: 'call', declined: 'call, declined', busy: 'call, busy', missed: 'call, missed',
  failed: 'call, failed', answered_elsewhere: 'call, answered on another device',
};
renderers.set('call', (m) => {
  const c = m.call || {};
  const kind = c.video ? 'Video' : 'Voice';
  const dir = m.direction === 'out' ? 'Outgoing' : (c.state === 'missed' ? 'Missed' : 'Incoming');
  const what = dir === 'Missed' ? `Missed ${kind.toLowerCase()} call` : `${dir} ${kind.toLowerCase()} ${OUTCOME[c.state] || 'call'}`;
  const dur = c.state === 'ended' ? ` · ${fmtDuration(c.duration_s || 0)}` : '';
  return el('div', { class: `bubble call-entry call-${c.state}`, 'data-call-state': c.state || '' }, `📞 ${what}${dur}`);
});

function fmtDuration(s) {
  const t = Math.round(s);
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}`;
}

// --- media --------------------------------------------------------------------------------
function deniedMessage(e, video) {
  const what = video ? 'camera and microphone' : 'microphone';
  if (e && (e.name === 'NotAllowedError' || e.name === 'SecurityError')) {
    return `XChat may not use your ${what}: access was denied. Allow it for this page in the browser (the icon in the address bar), then try again.`;
  }
  if (e && (e.name === 'NotFoundError' || e.name === 'OverconstrainedError')) return `No ${what} found on this device.`;
  if (e && e.name === 'NotReadableError') return `Your ${what} is in use by another program.`;
  return `Cannot use your ${what}: ${e && e.message ? e.message : 'unknown error'}`;
}

async function getMedia(video) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('This browser cannot make calls (no microphone access for web pages).');
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: video ? { width: 640, height: 480 } : false });
  } catch (e) {
    if (!video) throw new Error(deniedMessage(e, false));
    // No camera (or it was refused): say so, and carry on with the voice only.
    let audioOnly;
    try { audioOnly = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (e2) { throw new Error(deniedMessage(e2, true)); }
    $('call-error').textContent = `${deniedMessage(e, true).replace('camera and microphone', 'camera')} The call continues without video.`;
    return audioOnly;
  }
}

async function newPeerConnection(call) {
  const { ice_servers: servers } = await get('/api/calls/ice');
  const relayOnly = localStorage.getItem(RELAY_KEY) === '1';
  if (relayOnly && !servers.length) {
    throw new Error('“Relay calls” is on, but this relay has no TURN server: turn it off in Settings to call directly.');
  }
  const pc = new RTCPeerConnection({
    iceServers: servers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })),
    iceTransportPolicy: relayOnly ? 'relay' : 'all',
  });
  pc.addEventListener('track', (e) => {
    const v = $('call-remote');
    v.srcObject = e.streams[0] || new MediaStream([e.track]);
  });
  pc.addEventListener('icecandidate', (e) => {
    if (!call.sdpSent) return;  // still gathering: it goes inside the SDP
    call.outIce.push(e.candidate ? { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex } : null);
    flushOutIce(call);
  });
  pc.addEventListener('connectionstatechange', () => onPcState(call));
  return pc;
}

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, GATHER_MS);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

function flushOutIce(call) {
  if (!call.id || !call.outIce.length) return;
  const batch = call.outIce.splice(0).filter(Boolean);
  if (batch.length) post('/api/calls/ice', { call_id: call.id, candidates: batch }).catch(() => {});
}

async function addRemoteIce(call, candidates) {
  if (!call.pc || !call.pc.remoteDescription) { call.inIce.push(...candidates); return; }
  for (const c of candidates) {
    try { await call.pc.addIceCandidate(c); } catch (e) { /* a bad candidate only */ }
  }
}

function onPcState(call) {
  if (call !== current || !call.id) return;
  const s = call.pc.connectionState;
  if (s === 'connected' && !call.connectedAt) {
    call.connectedAt = Date.now();
    post('/api/calls/media', { call_id: call.id, state: 'connected' }).catch(() => {});
    render();
  } else if (s === 'failed') {
    post('/api/calls/media', { call_id: call.id, state: 'failed', reason: 'the browser could not connect the media (ICE or DTLS failed)' }).catch(() => {});
  }
}

// --- ringing ------------------------------------------------------------------------------
function startRing() {
  stopRing();
  let ctx;
  try { ctx = new AudioContext(); } catch (e) { return; }
  const beep = () => {
    const t = ctx.currentTime;
    for (const [hz, at] of [[440, 0], [480, 0], [440, 0.5], [480, 0.5]]) {
      const o = ctx.createOscillator();
      const g = ctx.createGain();
      g.gain.value = 0.05;
      o.frequency.value = hz;
      o.connect(g).connect(ctx.destination);
      o.start(t + at);
      o.stop(t + at + 0.4);
    }
  };
  ctx.resume().catch(() => {});
  beep();
  ring = { ctx, timer: setInterval(beep, 3000) };
}
function stopRing() {
  if (!ring) return;
  clearInterval(ring.timer);
  ring.ctx.close().catch(() => {});
  ring = null;
}

// --- the call screen ----------------------------------------------------------------------
function newCall(fields) {
  return { id: null, state: 'dialing', pc: null, local: null, inIce: [], outIce: [], sdpSent: false, connectedAt: 0, muted: false, cameraOff: false, ...fields };
}

function peerName(call) { return call.handle ? `@${call.handle}` : displayName({ address: call.peer }); }

function safetyText(call) {
  if (call.identity_changed) return '⚠ Their safety number changed: compare it before you trust who is on the line.';
  if (call.verified) return '✓ Verified: you compared safety numbers with this person.';
  return 'Not verified: compare safety numbers to be sure who you are talking to.';
}

let tick = null;
function render() {
  const call = current;
  if (!call) { show(screen, false); return; }
  show(screen, true);
  screen.dataset.state = call.state;
  $('call-peer').textContent = peerName(call);
  $('call-safety').textContent = safetyText(call);
  $('call-safety').dataset.verified = call.verified && !call.identity_changed ? 'yes' : 'no';
  const incoming = call.direction === 'in' && call.state === 'incoming';
  const ended = call.state === 'ended';
  const kind = call.video ? 'video call' : 'voice call';
  const status = {
    dialing: `Calling… (${kind})`, ringing: 'Ringing…', incoming: `Incoming ${kind}`, connecting: 'Connecting…',
  }[call.state];
  $('call-status').textContent = ended ? call.endText : call.orphan ? 'In progress in another tab (no sound here)' : call.connectedAt ? fmtDuration((Date.now() - call.connectedAt) / 1000) : status || call.state;
  show($('btn-call-accept'), incoming);
  show($('btn-call-decline'), incoming);
  show($('btn-call-mute'), !incoming && !ended);
  show($('btn-call-camera'), !incoming && !ended && Boolean(call.local && call.local.getVideoTracks().length));
  show($('btn-call-hangup'), !incoming && !ended);
  show($('btn-call-close'), ended);
  $('btn-call-mute').textContent = call.muted ? 'Unmute' : 'Mute';
  $('btn-call-mute').setAttribute('aria-pressed', String(call.muted));
  $('btn-call-camera').textContent = call.cameraOff ? 'Camera on' : 'Camera off';
  $('btn-call-camera').setAttribute('aria-pressed', String(call.cameraOff));
  show($('call-local'), Boolean(call.local && call.local.getVideoTracks().length) && !ended);
  if (call.connectedAt && !ended && !tick) tick = setInterval(render, 1000);
  if ((ended || !call.connectedAt) && tick) { clearInterval(tick); tick = null; }
}

function closeScreen() {
  if (current && current.state !== 'ended') return;
  current = null;
  $('call-error').textContent = '';
  render();
}

function release(call) {
  stopRing();
  if (call.pc) { try { call.pc.close(); } catch (e) { /* closed */ } }
  if (call.local) call.local.getTracks().forEach((t) => t.stop());
  $('call-remote').srcObject = null;
  $('call-local').srcObject = null;
}

function failLocally(call, message) {
  release(call);
  call.state = 'ended';
  call.endText = 'Call not started';
  $('call-error').textContent = message;
  render();
}

// --- actions ------------------------------------------------------------------------------
async function startCall(video) {
  const c = state.contact;
  if (!c || current && current.state !== 'ended') return;
  current = newCall({ direction: 'out', peer: c.address, handle: c.handle, video, verified: c.verified, identity_changed: c.identity_changed });
  const call = current;
  $('call-error').textContent = '';
  render();
  try {
    call.local = await getMedia(video);
    $('call-local').srcObject = call.local;
    call.pc = await newPeerConnection(call);
    call.local.getTracks().forEach((t) => call.pc.addTrack(t, call.local));
    await call.pc.setLocalDescription(await call.pc.createOffer());
    await gathered(call.pc);
    call.sdpSent = true;
    const r = await post('/api/calls/place', { to: c.address, sdp: call.pc.localDescription.sdp, video });
    Object.assign(call, { id: r.call.call_id, verified: r.call.verified, identity_changed: r.call.identity_changed });
    if (call.state === 'dialing') call.state = r.call.state;
    flushOutIce(call);
    render();
  } catch (e) {
    if (call === current) failLocally(call, e.message);
  }
}

async function accept() {
  const call = current;
  if (!call || call.state !== 'incoming') return;
  stopRing();
  call.state = 'connecting';
  render();
  try {
    call.local = await getMedia(call.video);
    $('call-local').srcObject = call.local;
    call.pc = await newPeerConnection(call);
    await call.pc.setRemoteDescription({ type: 'offer', sdp: call.offer });
    call.local.getTracks().forEach((t) => call.pc.addTrack(t, call.local));
    await addRemoteIce(call, call.inIce.splice(0));
    await call.pc.setLocalDescription(await call.pc.createAnswer());
    await gathered(call.pc);
    call.sdpSent = true;
    await post('/api/calls/answer', { call_id: call.id, sdp: call.pc.localDescription.sdp });
    flushOutIce(call);
  } catch (e) {
    $('call-error').textContent = e.message;
    post('/api/calls/hangup', { call_id: call.id }).catch(() => {});
  }
}

async function decline() {
  const call = current;
  if (!call || call.state !== 'incoming') return;
  stopRing();
  try { await post('/api/calls/decline', { call_id: call.id }); } catch (e) { alertText(e.message); }
}

async function hangup() {
  const call = current;
  if (!call) return;
  if (!call.id) { failLocally(call, ''); return; }
  try { await post('/api/calls/hangup', { call_id: call.id }); } catch (e) { alertText(e.message); }
}

function toggleMute() {
  const call = current;
  if (!call || !call.local) return;
  call.muted = !call.muted;
  call.local.getAudioTracks().forEach((t) => { t.enabled = !call.muted; });
  announce(call.muted ? 'Microphone muted' : 'Microphone on');
  render();
}

function toggleCamera() {
  const call = current;
  if (!call || !call.local) return;
  call.cameraOff = !call.cameraOff;
  call.local.getVideoTracks().forEach((t) => { t.enabled = !call.cameraOff; });
  announce(call.cameraOff ? 'Camera off' : 'Camera on');
  render();
}

// A page (re)load: a call still ringing can be answered here; one in progress has its media
// in another tab (or in a page that was closed): show it with a Hang up button.
on('app-entered', async () => {
  let r;
  try { r = await get('/api/calls/live'); } catch (e) { return; }
  if (!r.call || current) return;
  if (r.call.state === 'incoming' && r.sdp) {
    current = newCall({ ...r.call, id: r.call.call_id, state: 'incoming', offer: r.sdp });
    startRing();
    render();
  } else {
    current = newCall({ ...r.call, id: r.call.call_id, orphan: true });
    render();
  }
});

// --- events from the app process ---------------------------------------------------------------
const mine = (ev) => current && current.id && ev.call_id === current.id;

on('event:call_incoming', (ev) => {
  if (current && current.state !== 'ended') return;  // the app process answered "busy"
  current = newCall({ ...ev.call, id: ev.call.call_id, state: 'incoming', offer: ev.sdp });
  $('call-error').textContent = '';
  startRing();
  render();
  announce(`Incoming call from ${peerName(current)}`);
});

on('event:call_state', (ev) => {
  if (!mine(ev)) return;
  if (current.state !== 'ended' && !(ev.state === 'connecting' && current.connectedAt)) current.state = ev.state;
  render();
});

on('event:call_answer', async (ev) => {
  if (!mine(ev) || !current.pc) return;
  try {
    await current.pc.setRemoteDescription({ type: 'answer', sdp: ev.sdp });
    await addRemoteIce(current, current.inIce.splice(0));
  } catch (e) {
    post('/api/calls/media', { call_id: current.id, state: 'failed', reason: `unusable answer: ${e.message}` }).catch(() => {});
  }
});

on('event:call_ice', (ev) => {
  if (mine(ev)) addRemoteIce(current, ev.candidates || []);
});

const ENDED = {
  ended: 'Call ended', declined: 'Declined', busy: 'Busy: they are in another call', missed: 'No answer',
  failed: 'Call failed', answered_elsewhere: 'Answered on another device',
};
on('event:call_ended', (ev) => {
  if (mine(ev)) {
    const call = current;
    release(call);
    call.state = 'ended';
    const dur = ev.state === 'ended' && call.connectedAt ? ` · ${fmtDuration(ev.duration_s)}` : '';
    call.endText = (ENDED[ev.state] || ev.state) + dur;
    if (ev.state === 'failed' && ev.reason && !$('call-error').textContent) $('call-error').textContent = ev.reason;
    announce(call.endText);
    render();
  }
  if (state.current === ev.conv) loadMessages(false);
  refreshConversations();
});

// For tests and diagnostics: the running call's state and decoded video frames (getStats).
window.xchatCall = {
  state: () => (current ? current.state : null),
  async framesDecoded() {
    if (!current || !current.pc) return 0;
    let n = 0;
    (await current.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
    return n;
  },
  /** "host", "srflx" or "relay": the local candidate of the pair WebRTC selected. */
  async selectedCandidateType() {
    if (!current || !current.pc) return null;
    const stats = await current.pc.getStats();
    let pair = null;
    stats.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
    if (!pair) stats.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
    const local = pair && stats.get(pair.localCandidateId);
    return local ? local.candidateType : null;
  },
};

