/* ingestapp: catalog search — keyword suggestions for the word being typed. */
'use strict';

(function () {
  const { el, fetchJSON } = window.Ingest;
  const form = document.getElementById('catalog-search');
  if (!form) return;
  const input = document.getElementById('q');
  const list = document.getElementById('keyword-suggestions');
  const DEBOUNCE_MS = 150;
  let timer = 0;
  let asked = '';

  /** Suggest keywords that start like the last word typed; choosing one completes that word. */
  async function suggest() {
    const words = input.value.split(/\s+/);
    const last = words.pop();
    if (!last || last === asked) return;
    asked = last;
    try {
      const { status, body } = await fetchJSON(`${form.dataset.keywordsUrl}?prefix=${encodeURIComponent(last)}`);
      if (status !== 200 || asked !== last) return;
      const before = words.length ? words.join(' ') + ' ' : '';
      list.replaceChildren(...body.keywords.map((k) => el('option', { value: before + k })));
    } catch (err) {
      // suggestions are a convenience: the search itself still works
    }
  }

  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(suggest, DEBOUNCE_MS);
  });
})();
