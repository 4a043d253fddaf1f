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

/** The full date and time, for hover titles. */
export function fmtFull(ms) {
  return new Date(ms).toLocaleString([], { dateStyle: 'full', timeStyle: 'medium' });
}
export function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }

// http(s) links become <a> elements (opened in a new tab, no referrer, no preview: a
// preview would fetch the linked site and tell it who is reading); everything is text.
const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;
export function linkify(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    let url = m[0].replace(/[).,;:!?\]]+$/, '');
    if (!url) continue;
    if (m.index > last) out.push(text.slice(last, m.index));
    let href = null;
    try { href = new URL(url).href; } catch (e) { /* not a URL: keep it as text */ }
    out.push(href ? el('a', { href, target: '_blank', rel: 'noopener noreferrer', class: 'link', text: url }) : url);
    last = m.index + url.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

// --- the checks the app process makes too, said before a round trip --------------------------
export const HANDLE_RE = /^[A-Za-z][A-Za-z0-9_]{2,31}$/;
/** What is wrong with a handle, specifically ('' if nothing): the hint already says the rule. */
export function handleProblem(handle) {
  if (HANDLE_RE.test(handle)) return '';
  const bad = [...handle].find((ch) => !/[A-Za-z0-9_]/.test(ch));
  if (bad !== undefined) return `“${bad}” cannot be in a handle: only letters, digits and _.`;
  if (handle.length < 3) return 'Too short: a handle has at least 3 characters.';
  if (handle.length > 32) return 'Too long: a handle has at most 32 characters.';
  return 'A handle starts with a letter.';
}

/** A recovery phrase as written down: "1. word 2. word", commas, extra spaces, capitals. */
export function phraseWords(text) {
  return text.toLowerCase().replace(/\b\d+\s*[.):-]?/g, ' ').split(/[\s,;·•]+/).filter(Boolean);
}
