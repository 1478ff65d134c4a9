/* ingestapp: the live progress view of one session.
 *
 * The server rendered the current state into the page; this script keeps it live:
 *   EventSource → apply each event to `model` → one render per animation frame.
 * The browser's own reconnection resumes with Last-Event-ID. When EventSource is missing or the
 * stream keeps failing (or stalls behind a buffering proxy), the page polls the status instead,
 * says so, and from time to time tries the stream again.
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
  const EVENT_TYPES = I.vocabulary.event_types.filter((type) => type !== 'error'); // 'error': below
  const TERMINAL_EVENTS = I.vocabulary.terminal_events;
  const PROGRESS_KEYS = ['status', 'progress_percent', 'total_files', 'processed_files', 'current_file',
    'stages', 'stats', 'worker_pool', 'timing', 'last_event_id'];
  const FAILURES_BEFORE_POLLING = 5; // stream errors in a row, with no event in between
  const STALL_MS = 3000; // no event for this long while the server's log advanced: a stall
  const POLL_MS = 1000;
  const PROBE_MS = 15000; // while polling after failures, try the stream again this often
  const MAX_ERROR_ROWS = 1000;
  const CONNECTION_TEXT = {
    connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…',
    polling: 'Polling', closed: 'Closed',
  };

  /** What the page shows; events and status responses are merged into it. */
  const model = {
    state: page.state,
    receivedAt: performance.now(), // when state.timing arrived (elapsed and ETA tick from there)
    lastSeq: page.state.last_event_id, // the stream position: only stream events move it
    shownSeq: page.state.last_event_id, // the newest event (or status) the numbers come from
    errors: [],
    errorKeys: new Set(),
    errorsReset: true, // the first render redraws the server's rows (times in local time)
    rendered: 0, // how many of `errors` are in the list
    message: null,
  };

  /** The connection: mode is 'sse', 'polling' or 'done'. */
  const conn = {
    mode: 'sse', source: null, failures: 0, stalls: 0, lastEventAt: 0,
    pollTimer: 0, probeTimer: 0, reconnectTimer: 0, probe: true,
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
    if (type === 'file') return; // a file's outcome is in the progress and error events
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

  // -- the stream ----------------------------------------------------------------------------

  function onStreamEvent(event) {
    conn.failures = 0;
    conn.stalls = 0;
    conn.lastEventAt = performance.now();
    if (conn.mode === 'polling') leavePolling(); // a probe got through
    if (conn.mode !== 'sse') return;
    const data = JSON.parse(event.data);
    if (event.type === 'snapshot') {
      applyState(data, data.reset);
      model.lastSeq = data.last_event_id;
    } else {
      const seq = Number(event.lastEventId) || data.seq;
      if (seq <= model.lastSeq) return; // already seen (a replay overlaps)
      model.lastSeq = seq;
      applyEvent(event.type, data, seq);
    }
    setConnection('live');
    schedule();
    if (TERMINAL_EVENTS.includes(event.type) || FINISHED.includes(model.state.status)) finish();
  }

  /** Open the stream; `resume` continues after the last event seen instead of a snapshot. */
  function openStream(resume) {
    closeStream();
    const url = resume ? `${urls.stream}?last_event_id=${model.lastSeq}` : urls.stream;
    const source = new EventSource(url);
    conn.source = source;
    for (const type of EVENT_TYPES) source.addEventListener(type, onStreamEvent);
    // The server's `error` events share their name with EventSource's own connection errors:
    // a MessageEvent is a failed file, a plain Event is the connection failing.
    source.addEventListener('error', (event) => {
      if (event instanceof MessageEvent) onStreamEvent(event);
      else onStreamError(source);
    });
    source.onopen = () => {
      if (conn.mode !== 'sse' || conn.source !== source) return;
      setConnection('live');
      // Back after a failure: the server may have restarted meanwhile (let the replay land first).
      if (conn.failures) setTimeout(syncStatus, 500);
    };
  }

  function closeStream() {
    clearTimeout(conn.reconnectTimer);
    if (conn.source) conn.source.close();
    conn.source = null;
  }

  function onStreamError(source) {
    if (source !== conn.source) return;
    conn.failures += 1;
    if (conn.mode === 'polling') { // a probe failed: keep polling
      closeStream();
      scheduleProbe();
      return;
    }
    if (conn.failures >= FAILURES_BEFORE_POLLING) {
      startPolling('The live stream keeps failing, so this page is checking for updates every second.');
      scheduleProbe();
      return;
    }
    setConnection('reconnecting');
    if (source.readyState === EventSource.CLOSED) { // the browser gave up (an HTTP error): retry ourselves
      closeStream();
      recheck();
    }
  }

  async function recheck() {
    const status = await loadStatus();
    if (conn.mode !== 'sse') return;
    if (status && FINISHED.includes(status.status)) {
      applyState(status, false);
      finish();
      return;
    }
    conn.reconnectTimer = setTimeout(() => { if (conn.mode === 'sse') openStream(true); }, 2000);
  }

  /** Take the status when it is at our stream position but says something else: a job stopped
   * by a server shutdown becomes "interrupted" without an event. Returns the status (or null). */
  async function syncStatus() {
    const status = await loadStatus();
    if (!status || conn.mode !== 'sse') return null;
    if (status.last_event_id === model.lastSeq && status.status !== model.state.status) {
      applyState(status, false);
      schedule();
    }
    return status;
  }

  /** A buffering proxy lets the stream open but holds its events: notice it, then poll. */
  async function watchdog() {
    if (conn.mode !== 'sse' || !RUNNING.includes(model.state.status)) return;
    if (performance.now() - conn.lastEventAt < STALL_MS) return;
    const status = await syncStatus();
    if (!status || performance.now() - conn.lastEventAt < STALL_MS) return;
    if (status.last_event_id <= model.lastSeq) { conn.stalls = 0; return; }
    conn.stalls += 1;
    if (conn.stalls >= 2) {
      conn.probe = false; // the stream gets through but late: probing would only stall again
      startPolling('Live updates are being held back on the way (a buffering proxy?), ' +
        'so this page is checking for updates every second.');
    }
  }

  // -- polling -------------------------------------------------------------------------------

  async function loadStatus() {
    try {
      const { status, body } = await I.fetchJSON(urls.status, { cache: 'no-store' });
      return status === 200 ? body : null;
    } catch (err) {
      return null;
    }
  }

  function startPolling(reason) {
    closeStream();
    conn.mode = 'polling';
    const note = $('fallback-note');
    note.textContent = reason;
    note.hidden = false;
    setConnection('polling');
    poll();
  }

  async function poll() {
    clearTimeout(conn.pollTimer);
    if (conn.mode !== 'polling') return;
    const status = await loadStatus();
    if (conn.mode !== 'polling') return;
    if (status) {
      applyState(status, false);
      setConnection('polling');
      schedule();
      if (FINISHED.includes(status.status)) { finish(); return; }
    } else {
      setConnection('reconnecting');
    }
    conn.pollTimer = setTimeout(poll, model.state.status === 'interrupted' ? 5 * POLL_MS : POLL_MS);
  }

  function leavePolling() {
    clearTimeout(conn.pollTimer);
    clearTimeout(conn.probeTimer);
    conn.mode = 'sse';
    $('fallback-note').hidden = true;
  }

  function scheduleProbe() {
    clearTimeout(conn.probeTimer);
    if (!window.EventSource || !conn.probe) return;
    conn.probeTimer = setTimeout(() => { if (conn.mode === 'polling') openStream(true); }, PROBE_MS);
  }

  // -- the end -------------------------------------------------------------------------------

  /** The session ended: close everything, make the numbers exact, show the preview. */
  function finish() {
    if (conn.mode === 'done') return;
    conn.mode = 'done';
    closeStream();
    clearTimeout(conn.pollTimer);
    clearTimeout(conn.probeTimer);
    $('fallback-note').hidden = true;
    setConnection('closed');
    schedule();
    loadStatus().then((status) => { // the latest errors and the final stats, as persisted
      if (status) { applyState(status, false); schedule(); }
    });
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
    if (conn.mode === 'polling') poll();
    else if (conn.mode === 'sse' && !conn.source) openStream(true);
  }

  // -- rendering (at most once per frame) -------------------------------------------------------

  let frame = 0;
  let firstRender = true;
  const stageRows = new Map();

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function setConnection(state) {
    const node = $('connection');
    if (node.dataset.state === state) return;
    node.dataset.state = state;
    $('connection-text').textContent = CONNECTION_TEXT[state];
    $('live-badge').hidden = state !== 'live';
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
        `${stage.errors} error${plural} · ${stage.in_flight} in flight · ${I.duration(stage.duration_ms)}`);
    }
  }

  function renderStats(s) {
    for (const key of Object.keys(labels.stats)) {
      const node = $('stat-' + key);
      setCounter(node, s.stats[key], node.parentElement);
    }
  }

  function renderTiming(s) {
    const since = RUNNING.includes(s.status) ? performance.now() - model.receivedAt : 0;
    const t = s.timing;
    I.setText($('rate'), Number(t.files_per_s || 0).toFixed(1));
    I.setText($('elapsed'), I.duration(t.elapsed_ms + since));
    const eta = t.estimated_remaining_ms;
    I.setText($('eta'), I.duration(eta === null || eta === undefined ? null : Math.max(0, eta - since)));
    I.setText($('pool-active'), s.worker_pool.active);
    I.setText($('pool-max'), s.worker_pool.max);
    I.setText($('pool-queue'), s.worker_pool.queue_depth);
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

  function renderActions(s) {
    const running = RUNNING.includes(s.status);
    $('cancel').hidden = !running;
    $('resume').hidden = s.status !== 'interrupted';
    if (!running) $('cancel').disabled = false;
    if (!running && $('action-status').textContent === 'Cancelling…') $('action-status').textContent = '';
    if (running || !window.IngestPreview) {
      if (window.IngestPreview) window.IngestPreview.hide();
    } else {
      window.IngestPreview.show(urls, s.status);
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
    renderActions(s);
    firstRender = false;
  }

  // -- start ---------------------------------------------------------------------------------

  $('cancel').addEventListener('click', cancel);
  $('resume').addEventListener('click', resume);
  addErrors(page.state.errors || []);
  setInterval(() => { if (RUNNING.includes(model.state.status)) schedule(); }, 1000); // elapsed, ETA
  setInterval(watchdog, 1000);

  if (FINISHED.includes(model.state.status)) {
    finish();
  } else if (!window.EventSource) {
    conn.probe = false;
    startPolling('This browser cannot stream updates, so this page is checking for updates every second.');
  } else {
    setConnection('connecting');
    openStream(false);
  }
  schedule();

  // Back/forward cache: let the page be cached without its stream, and resume when it returns.
  window.addEventListener('pagehide', (event) => { if (event.persisted) closeStream(); });
  window.addEventListener('pageshow', (event) => {
    if (!event.persisted) return;
    if (conn.mode === 'sse') { setConnection('reconnecting'); openStream(true); }
    else if (conn.mode === 'polling') poll();
  });
})();
