/* ingestapp: the ingest form — directory browser, API errors next to their field, Start. */
'use strict';

(function () {
  const { el, fetchJSON, postJSON, vocabulary } = window.Ingest;
  const form = document.getElementById('ingest-form');
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const BOOLS = vocabulary.option_flags;

  // -- parameters and errors -----------------------------------------------------------------

  function parameters() {
    const p = { directory: $('directory').value.trim() };
    const pattern = $('pattern').value.trim();
    if (pattern) p.pattern = pattern; // nothing sent: the server's default (all media)
    for (const name of BOOLS) p[name] = $(name).checked;
    p.nsfw_threshold = Number($('nsfw_threshold').value);
    const max = $('max_files').value.trim();
    p.max_files = max === '' ? null : Number(max);
    return p;
  }

  /** A control was changed: its error (and the form's) no longer applies. */
  function clearErrorOf(control) {
    const error = $('error-' + control.name) || (control.id === 'nsfw_threshold' && $('error-nsfw_threshold'));
    if (error) { error.hidden = true; error.textContent = ''; }
    $('form-error').hidden = true;
    control.removeAttribute('aria-invalid');
  }

  /** `/?directory=…&pattern=…` (the link back from a session that matched nothing) fills the form. */
  function prefill() {
    const query = new URLSearchParams(window.location.search);
    for (const name of ['directory', 'pattern']) if (query.get(name)) $(name).value = query.get(name);
  }

  function clearErrors() {
    for (const node of form.querySelectorAll('.field-error')) { node.hidden = true; node.textContent = ''; }
    for (const node of form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
  }

  /** Show the API's {error, field} next to its control, or at the top when it has none. */
  function showError(message, field) {
    const target = (field && $('error-' + field)) || $('form-error');
    target.textContent = message;
    target.hidden = false;
    const control = field && $(field);
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    }
  }

  function validate(p) {
    if (!p.directory) return ['Choose a directory to ingest.', 'directory'];
    if (p.max_files !== null && (!Number.isInteger(p.max_files) || p.max_files < 1)) {
      return ['Max files must be a whole number of at least 1.', 'max_files'];
    }
    return null;
  }

  async function start(event) {
    event.preventDefault();
    clearErrors();
    const p = parameters();
    const invalid = validate(p);
    if (invalid) { showError(...invalid); return; }
    const button = $('start');
    button.disabled = true;
    $('start-status').textContent = 'Starting…';
    try {
      const { status, body } = await postJSON(form.dataset.processUrl, { parameters: p });
      if (status === 202 && body) {
        window.location.assign(form.dataset.sessionUrl.replace('SESSION_ID', encodeURIComponent(body.session_id)));
        return;
      }
      showError((body && body.error) || `The server answered ${status}.`, body && body.field);
    } catch (err) {
      showError('The server could not be reached. Check the connection and try again.', null);
    }
    button.disabled = false;
    $('start-status').textContent = '';
  }

  // -- NSFW threshold ------------------------------------------------------------------------

  function syncThreshold() {
    $('nsfw_threshold_value').textContent = Number($('nsfw_threshold').value).toFixed(2);
    $('nsfw_threshold').disabled = !$('enable_nsfw_detection').checked;
  }

  // -- directory browser ---------------------------------------------------------------------

  const browser = { path: null, parent: null };

  function mediaCount(n) {
    if (n === null || n === undefined) return null;
    return el('span', { class: 'media-count muted', text: n === 0 ? 'no media' : `${n} media file${n === 1 ? '' : 's'}` });
  }

  function listEntries(entries) {
    const list = $('browser-list');
    list.replaceChildren(...entries.map((d) => el('li', {},
      el('button', { type: 'button', class: 'link-button', 'data-path': d.path },
        el('span', { class: 'folder-name', text: d.name }), ' ', mediaCount(d.media_count)))));
    if (!entries.length) list.append(el('li', { class: 'muted', text: 'No subfolders.' }));
  }

  // A lone surrogate U+DC80-U+DCFF in a path from the server stands for a byte that is not UTF-8
  // (Python's os.fsdecode): send that byte as %XX (encodeURIComponent throws on lone surrogates).
  const encodePath = (path) => path.split(/((?<![\uD800-\uDBFF])[\uDC80-\uDCFF])/).map((part, i) => (i % 2
    ? `%${(part.charCodeAt(0) - 0xDC00).toString(16).toUpperCase()}`
    : encodeURIComponent(part))).join('');

  async function browse(path) {
    const error = $('browser-error');
    error.hidden = true;
    try {
      const url = path === null
        ? form.dataset.rootsUrl
        : `${form.dataset.browseUrl}?path=${encodePath(path)}`;
      const { status, body } = await fetchJSON(url);
      if (status !== 200) throw new Error((body && body.error) || `HTTP ${status}`);
      if (path === null) {
        Object.assign(browser, { path: null, parent: null });
        listEntries(body.roots);
      } else {
        Object.assign(browser, { path: body.path, parent: body.parent });
        listEntries(body.directories);
      }
    } catch (err) {
      error.textContent = `Cannot open this folder: ${err.message}`;
      error.hidden = false;
      return;
    }
    $('browser-path').textContent = browser.path === null ? 'Media roots' : browser.path;
    $('browser-up').disabled = browser.path === null;
    $('browser-use').disabled = browser.path === null;
    const first = $('browser-list').querySelector('button');
    if (first) first.focus();
  }

  function toggleBrowser() {
    const open = $('browser').hidden;
    $('browser').hidden = !open;
    $('browse-toggle').setAttribute('aria-expanded', String(open));
    if (open) browse(browser.path);
  }

  function useFolder() {
    $('directory').value = browser.path;
    clearErrorOf($('directory'));
    toggleBrowser();
    $('directory').focus();
  }

  form.addEventListener('submit', start);
  form.addEventListener('input', (event) => { if (event.target.name) clearErrorOf(event.target); });
  form.addEventListener('change', (event) => { if (event.target.name) clearErrorOf(event.target); });
  $('enable_nsfw_detection').addEventListener('change', syncThreshold);
  $('nsfw_threshold').addEventListener('input', syncThreshold);
  $('browse-toggle').addEventListener('click', toggleBrowser);
  $('browser-up').addEventListener('click', () => browse(browser.parent));
  $('browser-use').addEventListener('click', useFolder);
  $('browser-list').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-path]');
    if (button) browse(button.dataset.path);
  });
  $('browser').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') { toggleBrowser(); $('browse-toggle').focus(); }
  });
  prefill();
  syncThreshold();
})();
