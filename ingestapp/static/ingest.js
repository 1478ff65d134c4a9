/* ingestapp: the live progress view of one session.
 *
 * The server rendered the current state into the page; this script keeps it live:
 *   connection.js (stream or polling) → apply each event to `model` → one render per frame.
 * It also fills the strip of the latest thumbnails from `file` events, and shows the
 * connection's state in one badge (data-connection) and, when offline, a banner.
 */
'use strict';

(function () {
  const I = window.Ingest;
  const dataNode = document.getElementById('page-data');
  if (!dataNode) return;
  const page = JSON.parse(dataNode.textContent);
  const { labels, urls } = page;
  const $ = (id) => document.getElementById(id);

  const RUNNING = I.vocabulary.running_statuses;
  const FINISHED = I.vocabulary.finished_statuses;
  const TERMINAL_EVENTS = I.vocabulary.terminal_events;
  const PROGRESS_KEYS = ['status', 'progress_percent', 'total_files', 'processed_files', 'current_file',
    'stages', 'stats', 'worker_pool', 'timing', 'last_event_id', 'watch'];
  const WATCHING = I.vocabulary.session_status.WATCHING;
  const MAX_ERROR_ROWS = 1000;
  const STRIP_SIZE = 24; // thumbnails in the live strip
  const CONNECTION_TEXT = {
    live: 'Live', reconnecting: 'Reconnecting…', polling: 'Polling',
    offline: 'Offline', closed: 'Closed',
  };

  /** What the page shows; events and status responses are merged into it. */
  const model = {
    state: page.state,
    receivedAt: performance.now(), // when state.timing arrived (elapsed and ETA tick from there)
    shownSeq: page.state.last_event_id, // the newest event (or status) the numbers come from
    errors: [],
    errorKeys: new Set(),
    errorsReset: true, // the first render redraws the server's rows (times in local time)
    rendered: 0, // how many of `errors` are in the list
    message: null,
    wasLive: false, // before the first connection, "reconnecting" reads "Connecting…"
  };

  // -- model ---------------------------------------------------------------------------------

  function addErrors(list) {
    for (const e of list) {
      const key = [e.time, e.stage, e.file, e.message].join('\u0000');
      if (model.errorKeys.has(key)) continue;
      model.errorKeys.add(key);
      model.errors.push(e);
    }
  }

  /** A full state (snapshot or status response). */
  function applyState(full, reset) {
    const { errors, reset: _ignored, ...rest } = full;
    if (reset) {
      model.errors = [];
      model.errorKeys.clear();
      model.errorsReset = true;
    }
    Object.assign(model.state, rest);
    model.shownSeq = reset ? full.last_event_id : Math.max(model.shownSeq, full.last_event_id);
    model.receivedAt = performance.now();
    addErrors(errors || []);
  }

  function applyProgress(data) {
    for (const key of PROGRESS_KEYS) if (key in data) model.state[key] = data[key];
    model.receivedAt = performance.now();
  }

  function applyEvent(type, data, seq) {
    if (type === 'error') { addErrors([data]); return; }
    if (type === 'file') { addToStrip(data); return; } // counts come with the progress events
    // A replay after polling may be older than the status on screen: never go back in time.
    if (seq <= model.shownSeq && !TERMINAL_EVENTS.includes(type)) return;
    model.shownSeq = seq;
    if (type === 'stage') {
      const { stage, seq: _q, type: _t, emitted_at: _e, session_id: _s, ...fields } = data;
      model.state.stages[stage] = fields;
    } else {
      applyProgress(data);
    }
    if (type === 'failed') model.message = data.message;
  }

  // -- actions -------------------------------------------------------------------------------

  async function act(button, url, busyText) {
    const note = $('action-status');
    button.disabled = true;
    note.textContent = busyText;
    try {
      const { status, body } = await I.postJSON(url, {});
      if (status === 202) return true;
      note.textContent = (body && body.error) || `The server answered ${status}.`;
    } catch (err) {
      note.textContent = 'The server could not be reached.';
    }
    button.disabled = false;
    return false;
  }

  async function cancel() {
    if (await act($('cancel'), urls.cancel, 'Cancelling…')) $('action-status').textContent = 'Cancelling…';
  }

  async function resume() {
    if (!(await act($('resume'), urls.resume, 'Resuming…'))) return;
    $('action-status').textContent = '';
    $('resume').disabled = false;
    model.state.status = 'queued';
    schedule();
    connection.resume();
  }

  // -- the live thumbnail strip -------------------------------------------------------------------

  function addToStrip(file) {
    if (file.status !== 'ok') return;
    const url = urls.thumbnail.replace('ITEM_ID', encodeURIComponent(file.item_id));
    // The item's row is committed before its `file` event is published, and its thumbnail written
    // before that: the image can be asked for at once.
    const img = I.el('img', { src: url, alt: file.path, title: file.path, decoding: 'async', width: 64, height: 64 });
    const strip = $('strip');
    strip.prepend(I.el('li', {}, img));
    while (strip.childElementCount > STRIP_SIZE) strip.lastElementChild.remove();
    $('strip-section').hidden = false;
  }

  // -- the connection ------------------------------------------------------------------------

  function setConnection(state, note) {
    const node = $('connection');
    node.dataset.connection = state;
    if (state === 'live') model.wasLive = true;
    I.setText($('connection-text'), state === 'reconnecting' && !model.wasLive ? 'Connecting…' : CONNECTION_TEXT[state]);
    if (note !== undefined) {
      $('fallback-note').textContent = note || '';
    }
    $('fallback-note').hidden = state !== 'polling' || !$('fallback-note').textContent;
    const offline = state === 'offline';
    $('offline-banner').hidden = !offline;
    I.setOffline(offline);
  }

  // -- rendering (at most once per frame) -------------------------------------------------------

  let frame = 0;
  let firstRender = true;
  const stageRows = new Map();

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function setBar(bar, percent, text) {
    const key = percent === null || percent === undefined ? 'none' : String(percent);
    if (bar.dataset.value !== key) {
      bar.dataset.value = key;
      bar.classList.toggle('indeterminate', key === 'none');
      if (key === 'none') bar.removeAttribute('aria-valuenow');
      else bar.setAttribute('aria-valuenow', key);
      bar.firstElementChild.style.setProperty('--p', key === 'none' ? 0 : Math.min(1, percent / 100));
    }
    if (text && bar.getAttribute('aria-valuetext') !== text) bar.setAttribute('aria-valuetext', text);
  }

  /** Set a counter; a change (after the first render) makes it pulse. */
  function setCounter(node, value, pulseNode) {
    if (I.setText(node, value) && !firstRender) I.flash(pulseNode || node, 'data-pulse');
  }

  function renderOverall(s) {
    const done = s.stats.processed_files + s.stats.skipped_duplicates;
    const pct = I.percent(s.progress_percent);
    setBar($('overall-bar'), s.progress_percent, `${done} of ${s.total_files} files, ${pct}`);
    I.setText($('files-done'), done);
    I.setText($('files-total'), s.total_files);
    I.setText($('percent'), pct);
    I.setText($('status'), labels.status[s.status] || s.status);
    $('status').dataset.status = s.status;
    const message = $('fail-message');
    message.hidden = !model.message;
    I.setText(message, model.message || '');
    const title = `${labels.status[s.status] || s.status} · ${pct} · ingestapp`;
    if (document.title !== title) document.title = title;
    const current = $('current-file');
    if (I.setText(current, s.current_file || '—') && !firstRender) I.flash(current, 'data-fade');
  }

  function stageRow(name) {
    let row = stageRows.get(name) || document.querySelector(`#stages [data-stage="${CSS.escape(name)}"]`);
    if (!row) { // not rendered by the server (should not happen): build one like it
      const labelId = `stage-${name}-name`;
      row = I.el('li', { class: 'stage', 'data-stage': name },
        I.el('div', { class: 'stage-head' },
          I.el('span', { class: 'stage-name', id: labelId, text: labels.stage[name] || name }),
          I.el('span', { class: 'stage-status' })),
        I.el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-labelledby': labelId },
          I.el('div', { class: 'bar-fill' })),
        I.el('div', { class: 'stage-counts' },
          I.el('span', { class: 'stage-count' }), ' ', I.el('span', { class: 'stage-extra' })));
      $('stages').append(row);
    }
    stageRows.set(name, row);
    return row;
  }

  function renderStages(s) {
    for (const [name, stage] of Object.entries(s.stages)) {
      const row = stageRow(name);
      row.dataset.status = stage.status;
      I.setText(row.querySelector('.stage-status'), labels.stage_status[stage.status] || stage.status);
      const total = stage.total === null ? '?' : stage.total;
      setBar(row.querySelector('.bar'), stage.progress_percent, `${stage.processed} of ${total}`);
      setCounter(row.querySelector('.stage-count'), `${stage.processed} / ${total}`);
      const plural = stage.errors === 1 ? '' : 's';
      I.setText(row.querySelector('.stage-extra'),
        `${stage.errors} error${plural}${stage.skipped ? ` · ${stage.skipped} not run` : ''} · ` +
        `${stage.in_flight} in flight · ${I.duration(stage.duration_ms)}`);
    }
  }

  function renderStats(s) {
    for (const key of Object.keys(labels.stats)) {
      const node = $('stat-' + key);
      setCounter(node, s.stats[key], node.parentElement);
    }
  }

  function renderTiming(s) {
    const running = RUNNING.includes(s.status);
    const since = running ? performance.now() - model.receivedAt : 0;
    const t = s.timing;
    I.setText($('rate'), Number(t.files_per_s || 0).toFixed(1));
    I.setText($('elapsed'), I.duration(t.elapsed_ms + since));
    const eta = running ? t.estimated_remaining_ms : null; // a stopped job has no ETA, no workers
    I.setText($('eta'), I.duration(eta === null || eta === undefined ? null : Math.max(0, eta - since)));
    I.setText($('pool'), running ? `${s.worker_pool.active} / ${s.worker_pool.max}` : '—');
    I.setText($('pool-queue'), running ? s.worker_pool.queue_depth : '—');
  }

  function errorRow(e) {
    const when = new Date(e.time * 1000);
    return I.el('li', { class: 'error-row' },
      I.el('time', { datetime: when.toISOString(), text: I.clock(e.time) }), ' ',
      I.el('span', { class: 'tag', text: labels.stage[e.stage] || e.stage }), ' ',
      I.el('span', { class: 'path', text: e.file }), ' ',
      I.el('span', { class: 'message', text: e.message }));
  }

  function renderErrors(s) {
    const list = $('error-list');
    if (model.errorsReset) {
      list.replaceChildren();
      model.rendered = 0;
      model.errorsReset = false;
    }
    const rows = model.errors.slice(model.rendered).map(errorRow);
    if (rows.length) list.append(...rows);
    model.rendered = model.errors.length;
    while (list.childElementCount > MAX_ERROR_ROWS) list.firstElementChild.remove();
    const shown = list.childElementCount;
    setCounter($('error-count'), s.stats.errors);
    $('no-errors').hidden = shown > 0 || s.stats.errors > 0;
    $('errors-truncated').hidden = shown >= s.stats.errors;
    I.setText($('errors-shown'), shown);
    I.setText($('errors-total'), s.stats.errors);
  }

  /** A watching session: how it watches, its last file, what it imported; and why it polls. */
  function renderWatch(s) {
    const w = s.status === WATCHING ? s.watch : null;
    $('watch-line').hidden = !w;
    $('watch-warning').hidden = !(w && w.warning);
    if (!w) return;
    const last = w.last_file_at ? new Date(w.last_file_at * 1000).toLocaleTimeString() : 'none yet';
    const how = w.mode === 'polling' ? 'by polling' : 'with inotify';
    const imported = w.imported ? ` · imported ${w.imported.added} added, ${w.imported.updated} updated` : '';
    I.setText($('watch-line'), `Watching for new files ${how} · last file: ${last}${imported}`);
    I.setText($('watch-warning'), w.warning || '');
  }

  function renderActions(s) {
    const running = RUNNING.includes(s.status);
    $('cancel').hidden = !running;
    $('resume').hidden = s.status !== 'interrupted';
    if (!running) $('cancel').disabled = false;
    if (!running && $('action-status').textContent === 'Cancelling…') $('action-status').textContent = '';
    if ((running && s.status !== WATCHING) || !window.IngestPreview) { // a watch's review grows as it goes
      if (window.IngestPreview) window.IngestPreview.hide();
    } else {
      window.IngestPreview.show(urls, s);
    }
  }

  function render() {
    frame = 0;
    const s = model.state;
    renderOverall(s);
    renderStages(s);
    renderStats(s);
    renderTiming(s);
    renderErrors(s);
    renderWatch(s);
    renderActions(s);
    firstRender = false;
  }

  // -- start ---------------------------------------------------------------------------------

  const connection = I.connect({
    streamUrl: urls.stream,
    statusUrl: urls.status,
    lastEventId: page.state.last_event_id,
    status: () => model.state.status,
    onState(full, reset) { applyState(full, reset); schedule(); },
    onEvent(type, data, seq) {
      applyEvent(type, data, seq);
      schedule();
    },
    onConnection: setConnection,
    onFinish: schedule,
  });

  $('cancel').addEventListener('click', cancel);
  $('resume').addEventListener('click', resume);
  addErrors(page.state.errors || []);
  setInterval(() => { if (RUNNING.includes(model.state.status)) schedule(); }, 1000); // elapsed, ETA
  connection.start(FINISHED.includes(model.state.status));
  schedule();
})();
