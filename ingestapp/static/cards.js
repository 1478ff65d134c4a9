/* ingestapp: item cards (the preview grid; the catalog's come from the "item_card" macro, the same
 * markup), ratings, stage chips, keyword chips and warnings. */
'use strict';

(function () {
  const I = window.Ingest;
  const { el } = I;
  const ITEM = I.vocabulary.item_status;
  const LABELS = I.vocabulary.labels;
  const LIMITS = I.vocabulary.limits;
  const cardItems = new WeakMap(); // cards built here → their item (the dialog reads them)

  /** A rating −1…5 as stars (mirrors the "rating" macro). */
  function rating(value) {
    if (value === null || value === undefined) return el('span', { class: 'muted', text: '—' });
    if (value < 0) return el('span', { class: 'rating rejected', text: 'Rejected' });
    return el('span', {
      class: 'rating', role: 'img', 'aria-label': `${value} of 5 stars`,
      text: '★'.repeat(value) + '☆'.repeat(5 - value),
    });
  }

  /** The stage an error happened in, as a neutral chip ("Identify", "Thumbnails"): where it
   * happened, not a verdict (an NSFW flag is a .tag.danger). */
  function stageChip(stage) {
    return el('span', { class: 'stage-chip', text: LABELS.stage[stage] || stage });
  }

  /** A keyword as a link to the catalog filtered by it (GET /catalog?keyword=…). */
  function keywordChip(keyword) {
    const href = `${document.body.dataset.catalogUrl}?keyword=${encodeURIComponent(keyword)}`;
    return el('li', {}, el('a', { class: 'keyword', href, text: keyword }));
  }

  /** An item's keyword chips, at most `shown` of them and "+N more" (mirrors the "item_card"
   * macro); a catalog entry lists only its first ones and says how many it has (keyword_count). */
  function keywordList(item, shown, attrs) {
    const keywords = item.keywords.slice(0, shown);
    const more = (item.keyword_count || item.keywords.length) - keywords.length;
    return el('ul', { class: 'keywords', ...attrs }, ...keywords.map(keywordChip),
      more > 0 ? el('li', { class: 'more-keywords', text: `+${more.toLocaleString('en')} more` }) : null);
  }

  /** What the stages kept short of the file (a cap hit), one note each. */
  function warningNotes(item) {
    return (item.warnings || []).map((text) => el('p', { class: 'note warn item-warning', role: 'note', text }));
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
    if (item.width) add('Pixels', I.pixels(item));
    if (item.size_bytes !== null && item.size_bytes !== undefined) add('File size', I.bytes(item.size_bytes));
    if (md.make || md.model) add('Camera', I.camera(md.make, md.model));
    if (md.datetime_original) add('Taken', I.taken(md.datetime_original));
    if (md.duration_s) add('Length', I.duration(md.duration_s * 1000));
    add('Rating', rating(item.rating));
    add('Score', item.score === null || item.score === undefined ? '—' : String(item.score));
    const nsfw = el('span', { text: item.nsfw_score === null || item.nsfw_score === undefined ? '—' : item.nsfw_score.toFixed(2) });
    add('NSFW', item.nsfw ? el('span', {}, nsfw, ' ', el('span', { class: 'tag danger', text: 'NSFW' })) : nsfw);
    return rows;
  }

  /** One preview/catalog card (mirrors the "item_card" macro); `extra` nodes go at the end. */
  function itemCard(item, ...extra) {
    const statusClass = item.status && item.status !== ITEM.OK ? ' is-' + item.status : '';
    const card = el('li', { class: 'item' + (item.nsfw ? ' is-nsfw' : '') + statusClass },
      el('figure', {}, thumb(item), el('figcaption', { class: 'path', title: item.path, text: item.path })),
      el('dl', { class: 'meta' }, ...metaRows(item)));
    if (item.keywords && item.keywords.length) {
      card.append(keywordList(item, LIMITS.keywords_shown, { 'aria-label': 'Keywords' }));
    }
    card.append(...warningNotes(item));
    card.append(...extra.filter(Boolean));
    card.append(el('button', {
      type: 'button', class: 'link-button details-button', 'aria-haspopup': 'dialog',
      'aria-label': `Details of ${item.path}`, text: 'Details',
    }));
    cardItems.set(card, item);
    return card;
  }

  /** The item a card shows: built here, or server-rendered with data-item. */
  function cardItem(card) {
    if (cardItems.has(card)) return cardItems.get(card);
    return card.dataset.item ? JSON.parse(card.dataset.item) : null;
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

  Object.assign(I, { rating, stageChip, keywordChip, keywordList, warningNotes, itemCard, cardItem });
})();
