// Small DOM and formatting helpers shared by every module. Strings always become text
// nodes (textContent), never markup: there is no HTML-parsing sink anywhere in the app.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs, ...children) {
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

export function show(node, visible) { node.hidden = !visible; }

/** Show one top-level view (loading, locked, onboarding, app) and hide the others. */
export function showOnly(id) {
  for (const v of ['view-loading', 'view-locked', 'view-onboarding', 'view-app']) show($(v), v === id);
}
export function showLocked() { showOnly('view-locked'); }

// --- announcements for screen readers ---------------------------------------------------
export function announce(text) {
  const live = $('live');
  live.textContent = '';
  setTimeout(() => { live.textContent = text; }, 30);
}
export function alertText(text) {
  const a = $('alert');
  a.textContent = '';
  setTimeout(() => { a.textContent = text; }, 30);
}

// --- formatting -------------------------------------------------------------------------
export function shortAddr(a) { return a && a.length > 20 ? `${a.slice(0, 10)}…${a.slice(-6)}` : (a || ''); }
export function fmtTime(ms) {
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}
export function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
