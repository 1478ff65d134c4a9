/* ingestapp: helpers shared by every page (window.Ingest).
 * Server data only ever reaches the DOM through textContent and setAttribute, never innerHTML. */
'use strict';

(function () {
  /** Build an element: attrs.text → textContent, attrs.class → className, other attrs → attributes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'text') node.textContent = String(value);
      else if (name === 'class') node.className = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Set textContent only when it changes; true when it did. */
  function setText(node, value) {
    const text = String(value);
    if (node.textContent === text) return false;
    node.textContent = text;
    return true;
  }

  /** Restart a short CSS highlight (two identical keyframe sets, so no reflow is needed). */
  function flash(node, attr) {
    node.setAttribute(attr, node.getAttribute(attr) === 'a' ? 'b' : 'a');
  }

  const pad = (n) => String(n).padStart(2, '0');

  /** m:ss or h:mm:ss, like the server's "duration" filter. */
  function duration(ms) {
    if (ms === null || ms === undefined) return '—';
    const total = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  /** One decimal, rounded down: only a finished session reads 100%. */
  function percent(value) {
    if (value === null || value === undefined) return '—';
    if (value >= 100) return '100%';
    return (Math.floor(value * 10) / 10).toFixed(1) + '%';
  }

  function clock(unixSeconds) {
    const d = new Date(unixSeconds * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** fetch a GET once more after a network error or a 502/503/504 (a proxy while the server restarts). */
  async function fetchOnceMore(url, options) {
    const method = (options && options.method) || 'GET';
    try {
      const response = await fetch(url, options);
      if (method !== 'GET' || ![502, 503, 504].includes(response.status)) return response;
    } catch (err) {
      if (method !== 'GET') throw err;
    }
    await sleep(250);
    return fetch(url, options);
  }

  /** fetch + JSON: resolves {status, body}; rejects only on a network failure. */
  async function fetchJSON(url, options) {
    const response = await fetchOnceMore(url, { credentials: 'same-origin', ...options });
    let body = null;
    if ((response.headers.get('Content-Type') || '').includes('application/json')) {
      body = await response.json();
    }
    return { status: response.status, body };
  }

  /** The page's CSRF token (<meta name="csrf-token">): every POST carries it as X-CSRFToken. */
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : '';
  }

  /** POST JSON with the CSRF header; the one way the page scripts change state. */
  function postJSON(url, body) {
    return fetchJSON(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRFToken': csrfToken() },
      body: JSON.stringify(body || {}),
    });
  }

  /** "Canon" + "Canon EOS R6" → "Canon EOS R6" (like the server's "camera" filter). */
  function camera(make, model) {
    if (!make || !model) return make || model;
    const brand = make.split(' ')[0].toLowerCase();
    return model.toLowerCase().startsWith(brand) ? model : `${make} ${model}`;
  }

  /** "2023-12-28T19:42:10-03:00" → "2023-12-28 19:42" (the camera's local time, as recorded). */
  function taken(iso) {
    return String(iso).replace('T', ' ').slice(0, 16);
  }

  /** A rating −1…5 as stars (mirrors the "rating" macro). */
  function rating(value) {
    if (value === null || value === undefined) return el('span', { class: 'muted', text: '—' });
    if (value < 0) return el('span', { class: 'rating rejected', text: 'Rejected' });
    return el('span', {
      class: 'rating', role: 'img', 'aria-label': `${value} of 5 stars`,
      text: '★'.repeat(value) + '☆'.repeat(5 - value),
    });
  }

  function thumb(item) {
    if (!item.thumbnail_url) {
      return el('div', { class: 'thumb no-thumb' }, el('span', { text: item.mime_type || 'no preview' }));
    }
    if (item.nsfw) {
      return el('button', {
        type: 'button', class: 'thumb nsfw-thumb', 'aria-pressed': 'false',
        'aria-label': `Show NSFW thumbnail of ${item.path}`,
      },
      el('img', { src: item.thumbnail_url, alt: '', decoding: 'async' }),
      el('span', { class: 'nsfw-cover', 'aria-hidden': 'true', text: 'NSFW · click to show' }));
    }
    return el('div', { class: 'thumb' },
      el('img', { src: item.thumbnail_url, alt: item.path, decoding: 'async' }));
  }

  function metaRows(item) {
    const md = item.metadata || {};
    const rows = [];
    const add = (term, value) => rows.push(el('div', {}, el('dt', { text: term }), el('dd', {}, value)));
    if (item.width) add('Size', `${item.width}×${item.height}`);
    if (md.make || md.model) add('Camera', camera(md.make, md.model));
    if (md.datetime_original) add('Taken', taken(md.datetime_original));
    if (md.duration_s) add('Length', duration(md.duration_s * 1000));
    add('Rating', rating(item.rating));
    add('Score', item.score === null || item.score === undefined ? '—' : String(item.score));
    const nsfw = el('span', { text: item.nsfw_score === null || item.nsfw_score === undefined ? '—' : item.nsfw_score.toFixed(2) });
    add('NSFW', item.nsfw ? el('span', {}, nsfw, ' ', el('span', { class: 'tag danger', text: 'NSFW' })) : nsfw);
    return rows;
  }

  /** One preview/catalog card (mirrors the "item_card" macro); `extra` nodes go at the end. */
  function itemCard(item, ...extra) {
    const card = el('li', { class: 'item' + (item.nsfw ? ' is-nsfw' : '') + (item.status && item.status !== 'ok' ? ' is-' + item.status : '') },
      el('figure', {}, thumb(item), el('figcaption', { class: 'path', title: item.path, text: item.path })),
      el('dl', { class: 'meta' }, ...metaRows(item)));
    if (item.keywords && item.keywords.length) {
      card.append(el('ul', { class: 'keywords', 'aria-label': 'Keywords' },
        ...item.keywords.map((k) => el('li', { text: k }))));
    }
    card.append(...extra.filter(Boolean));
    return card;
  }

  /** A labelled NSFW thumbnail stays blurred until clicked (a button: keyboard operable too). */
  document.addEventListener('click', (event) => {
    const button = event.target.closest && event.target.closest('.nsfw-thumb');
    if (!button) return;
    const shown = button.getAttribute('aria-pressed') !== 'true';
    button.setAttribute('aria-pressed', String(shown));
    const name = button.getAttribute('aria-label').replace(/^(Show|Hide) /, '');
    button.setAttribute('aria-label', (shown ? 'Hide ' : 'Show ') + name);
  });

  /** Server-rendered bars carry their fill in data-p: the CSP (style-src 'self') forbids style="". */
  function fillBars() {
    for (const fill of document.querySelectorAll('.bar-fill[data-p]')) fill.style.setProperty('--p', fill.dataset.p);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fillBars);
  else fillBars();

  window.Ingest = { el, setText, flash, duration, percent, clock, bytes, fetchJSON, postJSON, itemCard };
})();
