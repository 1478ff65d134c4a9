/* ingestapp: catalog search — keyword suggestions for the search box (the word being typed) and
 * for the keyword filter (its whole value), from GET /api/catalog/keywords?prefix=. */
'use strict';

(function () {
  const { el, fetchJSON } = window.Ingest;
  const form = document.getElementById('catalog-search');
  if (!form) return;
  const DEBOUNCE_MS = 150;

  /** Suggest keywords into `list` for `input`: with `lastWord`, for its last word (choosing one
   * completes that word), else for the whole value. */
  function suggestFor(input, list, lastWord) {
    let timer = 0;
    let asked = '';

    async function suggest() {
      const words = lastWord ? input.value.split(/\s+/) : [];
      const prefix = lastWord ? words.pop() : input.value.trim();
      if (!prefix || prefix === asked) return;
      asked = prefix;
      try {
        const { status, body } = await fetchJSON(`${form.dataset.keywordsUrl}?prefix=${encodeURIComponent(prefix)}`);
        if (status !== 200 || asked !== prefix) return;
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
  }

  suggestFor(document.getElementById('q'), document.getElementById('keyword-suggestions'), true);
  suggestFor(document.getElementById('keyword'), document.getElementById('keyword-choices'), false);
})();
