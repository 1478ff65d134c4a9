/* ingestapp: the detail dialog — an item's full metadata in a modal <dialog>, opened by a card's
 * Details button or a click on its (non-NSFW) thumbnail. */
'use strict';

(function () {
  const I = window.Ingest;
  const { el } = I;
  const LABELS = I.vocabulary.labels;

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
    if (item.status) add('Status', LABELS.item_status[item.status] || item.status);
    add('File size', item.size_bytes === null || item.size_bytes === undefined ? null
      : `${item.size_bytes.toLocaleString('en')} bytes (${I.bytes(item.size_bytes)})`);
    add('Pixels', I.pixels(item, ' × '));
    add('Type', item.mime_type);
    add('Camera', I.camera(md.make, md.model));
    add('Lens', md.lens_model);
    add('Exposure', exposure(md));
    add('Taken', md.datetime_original ? I.taken(md.datetime_original) : null);
    add('Length', md.duration_s ? I.duration(md.duration_s * 1000) : null);
    add('Video', md.video_codec ? `${md.video_codec}${md.fps ? `, ${md.fps} fps` : ''}` : null);
    add('GPS', md.gps && md.gps.latitude !== null && md.gps.latitude !== undefined ? gpsLink(md.gps) : null);
    add('Keywords', item.keywords && item.keywords.length ? I.keywordList(item, item.keywords.length) : 'None');
    add('Rating', I.rating(item.rating));
    add('Score', none(item.score));
    add('NSFW score', item.nsfw_score === null || item.nsfw_score === undefined ? '—'
      : `${item.nsfw_score.toFixed(2)}${item.nsfw ? ' (NSFW)' : ''}`);
    add('SHA-256', item.sha256 ? el('code', { class: 'path', text: item.sha256 }) : null);
    if (item.worker) add('Processed by', el('code', { text: item.worker }));
    if (item.warnings && item.warnings.length) add('Warnings', el('div', {}, ...I.warningNotes(item)));
    if (item.errors && item.errors.length) {
      add('Errors', el('ul', {}, ...item.errors.map((e) => el('li', {}, I.stageChip(e.stage), ' ', e.message))));
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

  document.addEventListener('click', (event) => {
    const target = event.target.closest && event.target.closest('.details-button, .item .thumb:not(.nsfw-thumb)');
    if (!target) return;
    const card = target.closest('.item');
    const item = card && I.cardItem(card);
    if (item) showDetail(item, card.querySelector('.details-button'));
  });

  I.showDetail = showDetail;
})();
