/* ingestapp: the preview of a finished session — paginated thumbnails, exclusions, Import. */
'use strict';

(function () {
  const { el, fetchJSON, postJSON, itemCard } = window.Ingest;
  const $ = (id) => document.getElementById(id);
  const PAGE_SIZE = 24;
  const preview = { urls: null, shownFor: null, offset: 0, total: 0, exclude: new Set(), busy: false };

  function statusNote(item) {
    if (item.status === 'ok') return null;
    const note = el('div', { class: 'item-status' },
      el('span', { class: 'tag ' + (item.status === 'error' ? 'danger' : ''), text: item.status === 'skipped' ? 'Duplicate, skipped' : 'Error' }));
    for (const e of item.errors || []) note.append(el('p', { class: 'message', text: `${e.stage}: ${e.message}` }));
    return note;
  }

  function card(item) {
    const box = el('input', {
      type: 'checkbox', id: 'exclude-' + item.id, 'data-id': item.id,
      checked: preview.exclude.has(item.id), disabled: item.status !== 'ok',
    });
    const label = el('label', { class: 'exclude', for: box.id }, box, item.status === 'ok' ? 'Exclude from import' : 'Not imported');
    return itemCard(item, statusNote(item), label);
  }

  function summarize() {
    const excluded = preview.exclude.size;
    $('preview-summary').textContent = `${preview.total} file${preview.total === 1 ? '' : 's'}` +
      (excluded ? ` · ${excluded} excluded` : '');
    const pages = Math.max(1, Math.ceil(preview.total / PAGE_SIZE));
    $('preview-page').textContent = `Page ${Math.floor(preview.offset / PAGE_SIZE) + 1} of ${pages}`;
    $('preview-prev').disabled = preview.offset === 0;
    $('preview-next').disabled = preview.offset + PAGE_SIZE >= preview.total;
  }

  async function load(offset) {
    const grid = $('preview-grid');
    grid.setAttribute('aria-busy', 'true');
    try {
      const { status, body } = await fetchJSON(`${preview.urls.items}?offset=${offset}&limit=${PAGE_SIZE}`);
      if (status !== 200) throw new Error((body && body.error) || `HTTP ${status}`);
      preview.offset = offset;
      preview.total = body.total;
      grid.replaceChildren(...body.items.map(card));
      summarize();
    } catch (err) {
      $('preview-summary').textContent = `The files could not be loaded: ${err.message}`;
    } finally {
      grid.setAttribute('aria-busy', 'false');
    }
  }

  async function commit() {
    const button = $('import');
    const result = $('import-result');
    button.disabled = true;
    result.textContent = 'Importing…';
    try {
      const { status, body } = await postJSON(preview.urls.commit, { exclude: [...preview.exclude] });
      if (status !== 200) throw new Error((body && body.error) || `HTTP ${status}`);
      result.replaceChildren(
        `Imported: ${body.added} added, ${body.updated} updated, ${body.excluded} excluded. `,
        el('a', { href: preview.urls.catalog, text: 'Open the catalog' }));
    } catch (err) {
      result.textContent = `Import failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  /** Show the preview of a session that is no longer running (loads again if its status changed). */
  function show(urls, status) {
    $('preview').hidden = false;
    if (preview.shownFor === status) return;
    preview.urls = urls;
    preview.shownFor = status;
    load(preview.offset);
  }

  function hide() {
    $('preview').hidden = true;
    preview.shownFor = null;
  }

  $('preview-prev').addEventListener('click', () => load(Math.max(0, preview.offset - PAGE_SIZE)));
  $('preview-next').addEventListener('click', () => load(preview.offset + PAGE_SIZE));
  $('import').addEventListener('click', commit);
  $('preview-grid').addEventListener('change', (event) => {
    const box = event.target;
    if (!box.matches('input[data-id]')) return;
    if (box.checked) preview.exclude.add(box.dataset.id);
    else preview.exclude.delete(box.dataset.id);
    summarize();
  });

  window.IngestPreview = { show, hide };
})();
