/* ingestapp: similar pictures (issue 19).
 * The review: a "Similar" filter that shows each group of files showing the same picture side by
 * side, the suggested keeper marked, with "Keep the best, exclude the rest" per group and for all
 * groups (through POST …/exclusions, like the checkboxes), and the group count in the summary.
 * The catalog: a "Similar pictures" link in an entry's detail dialog (/catalog?similar_to=<id>). */
'use strict';

(function () {
  const { el, fetchJSON, postJSON, itemCard } = window.Ingest;
  const $ = (id) => document.getElementById(id);
  const ITEMS_PAGE = 500;

  // -- the catalog: "Similar pictures" in the detail dialog --------------------------------------

  const catalogGrid = $('catalog-grid');
  if (catalogGrid) {
    // common.js opens the dialog on the same click (its listener was added first): add the link to it.
    document.addEventListener('click', (event) => {
      const target = event.target.closest && event.target.closest('.details-button, .item .thumb:not(.nsfw-thumb)');
      const card = target && target.closest('#catalog-grid .item');
      const dialog = $('detail');
      if (!card || !card.dataset.item || !dialog) return;
      const entry = JSON.parse(card.dataset.item);
      const url = `${catalogGrid.dataset.catalogUrl}?similar_to=${encodeURIComponent(entry.id)}`;
      const link = el('p', { id: 'detail-similar' }, el('a', { href: url, text: 'Similar pictures' }));
      const old = $('detail-similar');
      if (old) old.replaceWith(link); else dialog.querySelector('.detail-body').append(link);
    });
  }

  // -- the review: the Similar filter ------------------------------------------------------------

  const filter = $('similar-filter');
  if (!filter) return;
  const similar = { urls: null, groups: [], items: new Map(), active: false };

  function setCount(n) {
    $('count-similar').textContent = String(n);
    $('similar-count').textContent = String(n);
  }

  async function loadGroups() {
    const { status, body } = await fetchJSON(similar.urls.similar, { cache: 'no-store' });
    if (status !== 200) throw new Error((body && body.error) || `HTTP ${status}`);
    similar.groups = body.groups;
    setCount(body.groups.length);
  }

  /** The session's ok items by id (what the groups are made of), a page at a time. */
  async function loadItems() {
    const items = new Map();
    for (let offset = 0; ; offset += ITEMS_PAGE) {
      const url = `${similar.urls.items}?view=new&limit=${ITEMS_PAGE}&offset=${offset}`;
      const { status, body } = await fetchJSON(url, { cache: 'no-store' });
      if (status !== 200) throw new Error((body && body.error) || `HTTP ${status}`);
      for (const item of body.items) items.set(item.id, item);
      if (offset + ITEMS_PAGE >= body.total) break;
    }
    similar.items = items;
  }

  function memberCard(group, id) {
    const item = similar.items.get(id);
    if (!item) return null;
    const keeper = id === group.keep;
    const note = keeper
      ? el('p', { class: 'tag keeper', text: 'Best: keep' })
      : el('p', { class: 'muted similar-state', text: item.excluded ? 'Excluded' : 'Will be imported' });
    const card = itemCard(item, note);
    card.classList.add(keeper ? 'is-keeper' : 'is-copy');
    card.dataset.id = id;
    return card;
  }

  function groupNode(group, n) {
    const title = `${group.item_ids.length} file${group.item_ids.length === 1 ? '' : 's'}`;
    const button = el('button', {
      type: 'button', class: 'secondary needs-server keep-best', 'data-group': String(n),
      text: 'Keep the best, exclude the rest', disabled: !group.exclude.length,
    });
    const catalog = group.catalog_ids.length
      ? el('p', { class: 'note warn', text: `Already in the catalog: ${group.catalog_ids.length} similar picture` +
        (group.catalog_ids.length === 1 ? '' : 's') })
      : null;
    return el('li', { class: 'similar-group', 'aria-label': `Group ${n + 1}: ${title}` },
      el('div', { class: 'similar-head' }, el('h3', { text: `Group ${n + 1} · ${title}` }), button),
      catalog,
      el('ul', { class: 'grid similar-row' }, ...group.item_ids.map((id) => memberCard(group, id)).filter(Boolean)));
  }

  async function render() {
    const list = $('similar-groups');
    list.setAttribute('aria-busy', 'true');
    try {
      await Promise.all([loadGroups(), loadItems()]);
      list.replaceChildren(...similar.groups.map(groupNode));
      if (!similar.groups.length) list.append(el('li', { class: 'muted empty', text: 'No similar pictures.' }));
      $('similar-keep-all').disabled = !similar.groups.some((g) => g.exclude.length);
    } catch (err) {
      list.replaceChildren(el('li', { class: 'muted', text: `The similar pictures could not be loaded: ${err.message}` }));
    } finally {
      list.setAttribute('aria-busy', 'false');
    }
  }

  /** Include each group's keeper and exclude the rest (two requests to the exclusions API). */
  async function keepBest(groups) {
    const exclude = groups.flatMap((g) => g.exclude);
    const steps = [{ excluded: false, ids: groups.map((g) => g.keep) }, { excluded: true, ids: exclude }];
    try {
      for (const body of steps) {
        const { status, body: answer } = await postJSON(similar.urls.exclusions, body);
        if (status !== 200) throw new Error((answer && answer.error) || `HTTP ${status}`);
      }
      $('similar-result').textContent = `${exclude.length} file${exclude.length === 1 ? '' : 's'} excluded.`;
    } catch (err) {
      $('similar-result').textContent = `The selection could not be saved: ${err.message}`;
    }
    await window.IngestPreview.reloadReview();
    await render();
  }

  function activate(on) {
    similar.active = on;
    filter.setAttribute('aria-pressed', String(on));
    $('similar-panel').hidden = !on;
    $('preview-grid').hidden = on;
    document.querySelector('#preview .pager').hidden = on;
    if (on) {
      for (const button of document.querySelectorAll('#preview .filter')) button.setAttribute('aria-pressed', 'false');
      $('similar-result').textContent = '';
      render();
    }
  }

  filter.addEventListener('click', () => activate(true));
  for (const button of document.querySelectorAll('#preview .filter')) {
    button.addEventListener('click', () => { if (similar.active) activate(false); });
  }
  $('similar-keep-all').addEventListener('click', () => keepBest(similar.groups.filter((g) => g.exclude.length)));
  $('similar-groups').addEventListener('click', (event) => {
    const button = event.target.closest('.keep-best');
    if (button) keepBest([similar.groups[Number(button.dataset.group)]]);
  });

  /** Called by preview.js when the review is shown: the group count for the summary. */
  function show(urls) {
    similar.urls = urls;
    const refresh = similar.active ? render() : loadGroups();
    refresh.catch(() => setCount('—'));
  }

  window.IngestSimilar = { show };
})();
