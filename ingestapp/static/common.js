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

  /** Like Jinja's filesizeformat(binary=True): "532 Bytes", "1.2 MiB". */
  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['Bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
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

  /** While the server is unreachable, disable every control that needs it (class needs-server);
   * give back only what this disabled. */
  function setOffline(offline) {
    document.documentElement.toggleAttribute('data-offline', offline);
    for (const node of document.querySelectorAll('.needs-server')) {
      if (offline && !node.disabled) {
        node.disabled = true;
        node.dataset.offlineDisabled = '';
      } else if (!offline && 'offlineDisabled' in node.dataset) {
        node.disabled = false;
        delete node.dataset.offlineDisabled;
      }
    }
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
    if (item.width) add('Pixels', `${item.width}×${item.height}`);
    if (item.size_bytes !== null && item.size_bytes !== undefined) add('File size', bytes(item.size_bytes));
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
    card.append(el('button', {
      type: 'button', class: 'link-button details-button', 'aria-haspopup': 'dialog',
      'aria-label': `Details of ${item.path}`, text: 'Details',
    }));
    cardItems.set(card, item);
    return card;
  }

  // -- the detail dialog -------------------------------------------------------------------------

  const cardItems = new WeakMap(); // cards built here → their item

  function exposure(md) {
    const parts = [];
    if (md.exposure_time_s) {
      parts.push(md.exposure_time_s < 1 ? `1/${Math.round(1 / md.exposure_time_s)} s` : `${md.exposure_time_s} s`);
    }
    if (md.f_number) parts.push(`f/${md.f_number}`);
    if (md.iso) parts.push(`ISO ${md.iso}`);
    if (md.focal_length_mm) parts.push(`${md.focal_length_mm} mm`);
    return parts.join(' · ');
  }

  function gpsLink(gps) {
    const { latitude: lat, longitude: lon } = gps;
    const text = `${lat.toFixed(5)}, ${lon.toFixed(5)}` + (gps.altitude_m !== null && gps.altitude_m !== undefined ? `, ${gps.altitude_m} m` : '');
    const href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=15/${lat}/${lon}`;
    return el('span', {}, text, ' ', el('a', { href, rel: 'noopener noreferrer', target: '_blank', text: 'Open in a map' }));
  }

  function detailRows(item) {
    const md = item.metadata || {};
    const rows = [];
    const add = (term, value) => {
      if (value === null || value === undefined || value === '') return;
      rows.push(el('div', {}, el('dt', { text: term }), el('dd', {}, value)));
    };
    const none = (v) => (v === null || v === undefined ? '—' : String(v));
    if (item.status) add('Status', { ok: 'New', skipped: 'Duplicate, skipped', error: 'Error' }[item.status] || item.status);
    add('File size', item.size_bytes === null || item.size_bytes === undefined ? null
      : `${item.size_bytes.toLocaleString('en')} bytes (${bytes(item.size_bytes)})`);
    add('Pixels', item.width ? `${item.width} × ${item.height}` : null);
    add('Type', item.mime_type);
    add('Camera', camera(md.make, md.model));
    add('Lens', md.lens_model);
    add('Exposure', exposure(md));
    add('Taken', md.datetime_original ? taken(md.datetime_original) : null);
    add('Length', md.duration_s ? duration(md.duration_s * 1000) : null);
    add('Video', md.video_codec ? `${md.video_codec}${md.fps ? `, ${md.fps} fps` : ''}` : null);
    add('GPS', md.gps && md.gps.latitude !== null && md.gps.latitude !== undefined ? gpsLink(md.gps) : null);
    add('Keywords', item.keywords && item.keywords.length ? item.keywords.join(', ') : 'None');
    add('Rating', rating(item.rating));
    add('Score', none(item.score));
    add('NSFW score', item.nsfw_score === null || item.nsfw_score === undefined ? '—'
      : `${item.nsfw_score.toFixed(2)}${item.nsfw ? ' (NSFW)' : ''}`);
    add('SHA-256', item.sha256 ? el('code', { class: 'path', text: item.sha256 }) : null);
    if (item.worker) add('Processed by', el('code', { text: item.worker }));
    if (item.errors && item.errors.length) {
      add('Errors', el('ul', {}, ...item.errors.map((e) => el('li', { text: `${e.stage}: ${e.message}` }))));
    }
    return rows;
  }

  function detailDialog() {
    let dialog = document.getElementById('detail');
    if (dialog) return dialog;
    dialog = el('dialog', { id: 'detail', class: 'detail', 'aria-labelledby': 'detail-title' },
      el('div', { class: 'detail-head' },
        el('h2', { id: 'detail-title', class: 'path' }),
        el('button', { type: 'button', class: 'secondary', id: 'detail-close', text: 'Close' })),
      el('div', { class: 'detail-body' }, el('div', { id: 'detail-image', class: 'detail-image' }),
        el('dl', { id: 'detail-meta', class: 'detail-meta' })));
    dialog.querySelector('#detail-close').addEventListener('click', () => dialog.close());
    dialog.addEventListener('click', (event) => { if (event.target === dialog) dialog.close(); }); // the backdrop
    document.body.append(dialog);
    return dialog;
  }

  /** Show an item's full metadata in a modal dialog (focus moves in; Escape or Close returns it). */
  function showDetail(item, opener) {
    const dialog = detailDialog();
    dialog.querySelector('#detail-title').textContent = item.path;
    const image = dialog.querySelector('#detail-image');
    image.replaceChildren(item.thumbnail_url && !item.nsfw
      ? el('img', { src: item.thumbnail_url, alt: `Thumbnail of ${item.path}` })
      : el('p', { class: 'muted', text: item.thumbnail_url ? 'NSFW: thumbnail not shown here.' : 'No thumbnail.' }));
    dialog.querySelector('#detail-meta').replaceChildren(...detailRows(item));
    dialog.addEventListener('close', () => { if (opener && opener.isConnected) opener.focus(); }, { once: true });
    dialog.showModal();
    dialog.querySelector('#detail-close').focus();
  }

  function cardItem(card) {
    if (cardItems.has(card)) return cardItems.get(card);
    return card.dataset.item ? JSON.parse(card.dataset.item) : null;
  }

  /** A card's Details button, or a click on a (non-NSFW) thumbnail, opens the dialog. */
  document.addEventListener('click', (event) => {
    const target = event.target.closest && event.target.closest('.details-button, .item .thumb:not(.nsfw-thumb)');
    if (!target) return;
    const card = target.closest('.item');
    const item = card && cardItem(card);
    if (item) showDetail(item, card.querySelector('.details-button'));
  });

  /** Server-rendered bars get their fill from data-p (no style attribute: the CSP forbids it). */
  function fillBars(root) {
    for (const fill of (root || document).querySelectorAll('.bar-fill[data-p]')) {
      fill.style.setProperty('--p', fill.dataset.p);
    }
  }
  document.addEventListener('DOMContentLoaded', () => fillBars());

  /** A labelled NSFW thumbnail stays blurred until clicked (a button: keyboard operable too). */
  document.addEventListener('click', (event) => {
    const button = event.target.closest && event.target.closest('.nsfw-thumb');
    if (!button) return;
    const shown = button.getAttribute('aria-pressed') !== 'true';
    button.setAttribute('aria-pressed', String(shown));
    const name = button.getAttribute('aria-label').replace(/^(Show|Hide) /, '');
    button.setAttribute('aria-label', (shown ? 'Hide ' : 'Show ') + name);
  });

  /** Statuses, event types, stage names, option flags and labels (ingestapp/vocabulary.py). */
  const vocabulary = JSON.parse(document.getElementById('vocabulary').textContent);

  window.Ingest = {
    el, setText, flash, duration, percent, clock, bytes, fetchJSON, postJSON, itemCard, setOffline, showDetail,
    vocabulary,
  };
})();
