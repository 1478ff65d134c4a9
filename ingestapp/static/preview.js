/* ingestapp: the review step of a session that is no longer running — a summary with "Import N"
 * first, then the files filtered by All / New / Duplicates / Errors / NSFW, with a checkbox per
 * file and select all / none for the current filter. Choices are kept by the server
 * (POST …/exclusions), so a reload or another tab shows the same. */
'use strict';

(function () {
  const I = window.Ingest;
  const { el, fetchJSON, postJSON, itemCard, vocabulary } = I;
  const $ = (id) => document.getElementById(id);
  if (!$('preview')) return;
  const ITEM = I.vocabulary.item_status;
  const LABELS = I.vocabulary.labels;
  const PAGE_SIZE = 24;
  const preview = { urls: null, shownFor: null, offset: 0, total: 0, view: 'all', review: null };

  /** Why a file is not imported: its status, and each error with the stage it happened in. */
  function statusNote(item) {
    const note = el('div', { class: 'item-status' },
      el('span', { class: 'tag' + (item.status === ITEM.ERROR ? ' danger' : ''), text: LABELS.item_status[item.status] || item.status }));
    for (const e of item.errors || []) note.append(el('p', { class: 'message' }, I.stageChip(e.stage), ' ', e.message));
    return note;
  }

  /** One card of the review grid: every kind of file is drawn here (a RAW+JPEG pair as one card). */
  function card(item, raw) {
    const pair = raw && el('p', { class: 'pair', text: `RAW+JPEG pair: ${extension(raw)} + ${extension(item)}` });
    if (item.status !== ITEM.OK) return itemCard(item, pair, statusNote(item), el('p', { class: 'exclude muted', text: 'Not imported' }));
    const box = el('input', {
      type: 'checkbox', id: 'include-' + item.id, 'data-id': raw ? `${item.id},${raw.id}` : item.id,
      class: 'needs-server', checked: !item.excluded,
    });
    return itemCard(item, pair, el('label', { class: 'exclude', for: box.id }, box, raw ? 'Import this pair' : 'Import this file'));
  }

  // -- RAW+JPEG pairs (item.pair_id): one card per pair on a page, showing the JPEG; an import
  // takes both, or only the RAW or only the JPEG of every pair (the commit's "pairs").
  const PAIRS = vocabulary.pair_import;
  const isRaw = (item) => (item.mime_type || '').startsWith('image/x-'); // exiftool's RAW MIME types
  const extension = (item) => item.path.slice(item.path.lastIndexOf('.') + 1).toUpperCase();

  function cards(items) {
    const byId = new Map(items.map((item) => [item.id, item]));
    const pairOf = (item) => {
      const partner = item.pair_id && byId.get(item.pair_id);
      return partner && partner.status === item.status && isRaw(partner) !== isRaw(item) ? partner : null;
    };
    return items.filter((item) => !(isRaw(item) && pairOf(item))).map((item) => card(item, pairOf(item)));
  }

  function pairChoice(review) {
    let select = $('pair-import');
    if (!select && review.pairs) {
      select = el('select', { id: 'pair-import', 'aria-label': 'Of each RAW+JPEG pair, import' },
        ...Object.values(PAIRS).map((value) => el('option', { value, text: vocabulary.labels.pairs[value] })));
      $('import').before(select);
    }
    if (select) select.hidden = !review.pairs || !review.import_offered;
    return select && !select.hidden ? select.value : PAIRS.BOTH;
  }

  // -- the summary -------------------------------------------------------------------------------

  function renderReview() {
    const r = preview.review;
    if (!r) return;
    for (const [view, count] of Object.entries(r.counts)) {
      const node = $('count-' + view);
      if (node) node.textContent = String(count);
      const badge = document.querySelector(`.filter [data-count="${view}"]`);
      if (badge) badge.textContent = String(count);
    }
    const button = $('import');
    button.hidden = !r.import_offered;
    button.textContent = `Import ${r.import_count}`;
    pairChoice(r);
    const result = $('import-result');
    if (r.imported) {
      const i = r.imported;
      result.replaceChildren(
        `Imported ${I.when(i.at)} — ${i.added} added, ${i.updated} updated, ${i.excluded} excluded. `,
        el('a', { href: preview.urls.catalog, text: 'Open the catalog' }),
        r.import_offered ? el('span', { text: ' Your selection changed since: import again to apply it.' }) : '');
    } else if (r.import_count === 0) {
      result.textContent = r.counts.all ? 'Nothing to import: every file is excluded, a duplicate or failed.' : '';
    } else {
      result.textContent = '';
    }
    summarize();
  }

  async function loadReview() {
    const { status, body } = await fetchJSON(preview.urls.review, { cache: 'no-store' });
    if (status === 200) { preview.review = body; renderReview(); }
  }

  // -- the grid ----------------------------------------------------------------------------------

  function summarize() {
    const r = preview.review;
    const excluded = r ? r.excluded : 0;
    $('preview-summary').textContent = `${preview.total} file${preview.total === 1 ? '' : 's'}` +
      (excluded ? ` · ${excluded} excluded` : '') + (r && r.pairs ? ` · ${r.pairs} RAW+JPEG pair${r.pairs === 1 ? '' : 's'}` : '');
    const pages = Math.max(1, Math.ceil(preview.total / PAGE_SIZE));
    $('preview-page').textContent = `Page ${Math.floor(preview.offset / PAGE_SIZE) + 1} of ${pages}`;
    $('preview-prev').disabled = preview.offset === 0;
    $('preview-next').disabled = preview.offset + PAGE_SIZE >= preview.total;
  }

  /** Load a page of the grid; `scroll` brings the grid's top into view (the pager's buttons sit
   * below it). */
  async function load(offset, scroll) {
    const grid = $('preview-grid');
    grid.setAttribute('aria-busy', 'true');
    try {
      const url = `${preview.urls.items}?offset=${offset}&limit=${PAGE_SIZE}&view=${preview.view}`;
      const { status, body } = await fetchJSON(url, { cache: 'no-store' });
      if (status !== 200) throw new Error((body && body.error) || `HTTP ${status}`);
      preview.offset = offset;
      preview.total = body.total;
      grid.replaceChildren(...cards(body.items));
      if (!body.items.length) grid.append(el('li', { class: 'muted empty', text: 'No files in this view.' }));
      summarize();
      if (scroll) $('preview').scrollIntoView({ block: 'start' });
    } catch (err) {
      $('preview-summary').textContent = `The files could not be loaded: ${err.message}`;
    } finally {
      grid.setAttribute('aria-busy', 'false');
    }
  }

  function setView(view) {
    preview.view = view;
    for (const button of document.querySelectorAll('#preview .filter')) {
      button.setAttribute('aria-pressed', String(button.dataset.view === view));
    }
    load(0);
  }

  /** Exclude (or include) by ids or by the current view; the server answers with the review. */
  async function exclude(body) {
    try {
      const { status, body: review } = await postJSON(preview.urls.exclusions, body);
      if (status !== 200) throw new Error((review && review.error) || `HTTP ${status}`);
      preview.review = review;
      renderReview();
      return true;
    } catch (err) {
      $('import-result').textContent = `The selection could not be saved: ${err.message}`;
      return false;
    }
  }

  async function selectView(include) {
    if (await exclude({ excluded: !include, view: preview.view })) load(preview.offset);
  }

  async function commit() {
    const button = $('import');
    const result = $('import-result');
    button.disabled = true;
    result.textContent = 'Importing…';
    try {
      const { status, body } = await postJSON(preview.urls.commit, { pairs: pairChoice(preview.review || {}) });
      if (status !== 200) throw new Error((body && body.error) || `HTTP ${status}`);
      await loadReview();
    } catch (err) {
      result.textContent = `Import failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  /** Show the review of a session that is no longer running, or watching (loads again when its
   * status or its number of files done changed). */
  function show(urls, state) {
    preview.urls = urls;
    const empty = state.status === I.vocabulary.session_status.COMPLETED && state.total_files === 0;
    $('review').hidden = false;
    $('no-match').hidden = !empty;
    $('review-heading').textContent = empty ? 'Nothing to import' : 'Review and import';
    $('review-body').hidden = empty;
    $('preview').hidden = empty;
    // A watching session's review grows: load it again whenever a file was done.
    const shownFor = `${state.status}:${state.processed_files + state.stats.skipped_duplicates}`;
    if (empty || preview.shownFor === shownFor) return;
    preview.shownFor = shownFor;
    loadReview().catch((err) => { // e.g. the server is restarting: say so; the next status loads it again
      $('import-result').textContent = `The review could not be loaded: ${err.message}`;
    });
    load(preview.offset);
    if (window.IngestSimilar) window.IngestSimilar.show(urls); // similar.js: the Similar filter
  }

  /** Hide the review while the session runs (called once a frame then: touches nothing twice). */
  function hide() {
    I.setHidden($('review'), true);
    I.setHidden($('preview'), true);
    preview.shownFor = null;
  }

  $('preview-prev').addEventListener('click', () => load(Math.max(0, preview.offset - PAGE_SIZE), true));
  $('preview-next').addEventListener('click', () => load(preview.offset + PAGE_SIZE, true));
  $('import').addEventListener('click', commit);
  $('select-all').addEventListener('click', () => selectView(true));
  $('select-none').addEventListener('click', () => selectView(false));
  for (const button of document.querySelectorAll('#preview .filter')) {
    button.addEventListener('click', () => setView(button.dataset.view));
  }
  $('preview-grid').addEventListener('change', async (event) => {
    const box = event.target;
    if (!box.matches('input[data-id]')) return;
    box.disabled = true;
    if (!(await exclude({ excluded: !box.checked, ids: box.dataset.id.split(',') }))) box.checked = !box.checked;
    box.disabled = false;
  });

  window.IngestPreview = { show, hide, reloadReview: loadReview };
})();
