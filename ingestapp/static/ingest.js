/* ingestapp: the live progress view of one session.
 *
 * The server rendered the current state into the page; this script keeps it live:
 *   connection.js (stream or polling) → each event updates `model` and marks what changed →
 *   one render per animation frame draws only that.
 * An event costs the same however many came before it: no DOM work, no layout read, no list
 * that grows without bound (the error log and the thumbnail strip keep their latest entries).
 */
'use strict';

(function () {
  const I = window.Ingest;
  const dataNode = document.getElementById('page-data');
  if (!dataNode) return;
  const page = JSON.parse(dataNode.textContent);
  const { labels, urls } = page;
  const $ = (id) => document.getElementById(id);

  const V = I.vocabulary;
  const STATUS = V.session_status;
  const EVENT = V.event_type;
  const RUNNING = V.running_statuses;
  const FINISHED = V.finished_statuses;
  const PROGRESS_KEYS = ['status', 'progress_percent', 'total_files', 'files_found', 'processed_files',
    'current_file', 'stages', 'stats', 'worker_pool', 'timing', 'last_event_id', 'watch', 'awaits_turn'];
  const MAX_ERROR_ROWS = 1000;
  const STRIP_SIZE = 24; // thumbnails in the live strip
  const PULSE_MS = 600; // a counter pulses at most this often (each pulse restarts a CSS animation)
  const TITLE_MS = 1000; // the tab title follows at most once a second
  // A queued session whose user's share of running sessions is taken (jobs/turns.py) starts by itself.
  const WAITS_FOR_TURN = '— waits for its turn: it starts when another session of the same user ends';
  const CONNECTION_TEXT = {
    live: 'Live', reconnecting: 'Reconnecting…', polling: 'Polling', offline: 'Offline', closed: 'Closed',
  };

  /** What the page shows; events and status responses are merged into it. */
  const model = {
    state: page.state,
    receivedAt: performance.now(), // when state.timing arrived (elapsed and ETA tick from there)
    shownSeq: page.state.last_event_id, // the newest event (or status) the numbers come from
    errors: [], // the latest MAX_ERROR_ROWS
    errorKeys: new Set(),
    errorsReset: true, // the first render redraws the server's rows (times in local time)
    newErrors: 0, // rows not drawn yet
    strip: [], // files not drawn yet (the latest STRIP_SIZE)
    message: null,
    wasLive: false, // before the first connection, "reconnecting" reads "Connecting…"
    dirty: { progress: true, stages: true, errors: true, strip: false },
  };

  // -- model ---------------------------------------------------------------------------------

  function errorKey(e) {
    return [e.time, e.stage, e.file, e.message].join('\u0000');
  }

  function addErrors(list) {
    for (const e of list) {
      const key = errorKey(e);
      if (model.errorKeys.has(key)) continue;
      model.errorKeys.add(key);
      model.errors.push(e);
      model.newErrors += 1;
    }
    if (model.errors.length > MAX_ERROR_ROWS) {
      for (const e of model.errors.splice(0, model.errors.length - MAX_ERROR_ROWS)) model.errorKeys.delete(errorKey(e));
    }
    model.dirty.errors = true;
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
    model.dirty.progress = model.dirty.stages = true;
    addErrors(errors || []);
  }

  function applyEvent(type, data, seq) {
    if (type === EVENT.ERROR) { addErrors([data]); return; }
    if (type === EVENT.FILE) { addToStrip(data); return; } // counts come with the progress events
    // A replay after polling may be older than the status on screen: never go back in time.
    if (seq <= model.shownSeq && !V.terminal_events.includes(type)) return;
    model.shownSeq = seq;
    if (type === EVENT.STAGE) {
      const { stage, seq: _q, type: _t, emitted_at: _e, session_id: _s, ...fields } = data;
      model.state.stages[stage] = fields;
      model.dirty.stages = true;
      return;
    }
    for (const key of PROGRESS_KEYS) if (key in data) model.state[key] = data[key];
    model.receivedAt = performance.now();
    if (type === EVENT.FAILED) model.message = data.message;
    model.dirty.progress = true;
    if ('stages' in data) model.dirty.stages = true;
  }

  function addToStrip(file) {
    if (file.status !== V.item_status.OK) return;
    model.strip.push(file);
    if (model.strip.length > STRIP_SIZE) model.strip.splice(0, model.strip.length - STRIP_SIZE);
    model.dirty.strip = true;
  }

  // -- wording (web/pages.py lead_text and found_note say the same) ---------------------------

  function done(s) {
    return s.stats.processed_files + s.stats.skipped_duplicates;
  }

  function leadText(s) {
    const of = `${done(s)} of ${s.total_files} files`;
    if (s.status === STATUS.WATCHING) return watchingText(s);
    if (s.status === STATUS.QUEUED && s.awaits_turn) return WAITS_FOR_TURN;
    if (RUNNING.includes(s.status)) return '';
    if (s.status === STATUS.INTERRUPTED) return `— ${of} done`;
    if (s.status === STATUS.COMPLETED) return `— ${of}`;
    return `after ${of}`;
  }

  /** "— 12 files ingested, last file 14:03:27": a watch has no end to count towards. */
  function watchingText(s) {
    const last = s.watch && s.watch.last_file_at ? `, last file ${I.clock(s.watch.last_file_at)}` : '';
    return `— ${done(s)} files ingested${last}`;
  }

  function foundNote(s) {
    if (!s.files_found || s.files_found <= s.total_files) return '';
    return `· the folder holds ${s.files_found} (max files: ${s.parameters.max_files})`;
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
    model.state.status = STATUS.QUEUED;
    model.dirty.progress = true;
    schedule();
    connection.resume();
  }

  // -- the connection ------------------------------------------------------------------------

  function setConnection(state, note) {
    const node = $('connection');
    node.dataset.connection = state;
    if (state === 'live') model.wasLive = true;
    I.setText($('connection-text'), state === 'reconnecting' && !model.wasLive ? 'Connecting…' : CONNECTION_TEXT[state]);
    if (note !== undefined) $('fallback-note').textContent = note || '';
    $('fallback-note').hidden = state !== 'polling' || !$('fallback-note').textContent;
    const offline = state === 'offline';
    $('offline-banner').hidden = !offline;
    I.setOffline(offline);
  }

  // -- rendering (at most once per frame, only what changed) ------------------------------------

  let frame = 0;
  let firstRender = true;
  let titleAt = 0;
  const pulsedAt = new Map(); // node → when it last pulsed
  const stageRows = new Map(); // stage name → {row, status, bar, count, extra}

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

  /** Set a counter; a change (after the first render) makes it pulse, at most every PULSE_MS. */
  function setCounter(node, value, pulseNode, now) {
    if (!I.setText(node, value) || firstRender) return;
    const target = pulseNode || node;
    if (now - (pulsedAt.get(target) || 0) < PULSE_MS) return;
    pulsedAt.set(target, now);
    I.flash(target, 'data-pulse');
  }

  function renderLead(s) {
    const status = labels.status[s.status] || s.status;
    I.setText($('status'), status);
    $('status').dataset.status = s.status;
    I.setText($('lead-text'), leadText(s));
    const errors = $('lead-errors');
    I.setHidden(errors, RUNNING.includes(s.status) || !s.stats.errors);
    I.setText(errors, `${s.stats.errors} error${s.stats.errors === 1 ? '' : 's'}`);
    const message = $('fail-message');
    I.setHidden(message, !model.message);
    I.setText(message, model.message || '');
  }

  function renderOverall(s, now) {
    const pct = I.percent(s.progress_percent);
    setBar($('overall-bar'), s.progress_percent, `${done(s)} of ${s.total_files} files, ${pct}`);
    I.setText($('files-done'), done(s));
    I.setText($('files-total'), s.total_files);
    const found = foundNote(s);
    I.setText($('files-found'), found);
    I.setHidden($('files-found'), !found);
    I.setText($('percent'), pct);
    I.setHidden($('current'), !RUNNING.includes(s.status)); // a stopped session has no current file
    const current = $('current-file');
    if (I.setText(current, s.current_file || '—') && !firstRender) I.flash(current, 'data-fade');
    const title = `${labels.status[s.status] || s.status} · ${pct} · ingestapp`;
    const statusChanged = document.title.split(' · ')[0] !== (labels.status[s.status] || s.status);
    if (document.title !== title && (statusChanged || now - titleAt >= TITLE_MS || !RUNNING.includes(s.status))) {
      document.title = title;
      titleAt = now;
    }
  }

  function buildStageRow(name) {
    const labelId = `stage-${name}-name`;
    const row = I.el('li', { class: 'stage', 'data-stage': name },
      I.el('div', { class: 'stage-head' },
        I.el('span', { class: 'stage-name', id: labelId, text: labels.stage[name] || name }),
        I.el('span', { class: 'stage-status' })),
      I.el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-labelledby': labelId },
        I.el('div', { class: 'bar-fill' })),
      I.el('div', { class: 'stage-counts' },
        I.el('span', { class: 'stage-count' }), ' ', I.el('span', { class: 'stage-extra' })));
    $('stages').append(row);
    return row;
  }

  /** A stage's row and its parts, found once (the server rendered it; built if not). */
  function stageParts(name) {
    let parts = stageRows.get(name);
    if (parts) return parts;
    const row = document.querySelector(`#stages [data-stage="${CSS.escape(name)}"]`) || buildStageRow(name);
    parts = { row, status: row.querySelector('.stage-status'), bar: row.querySelector('.bar'),
      count: row.querySelector('.stage-count'), extra: row.querySelector('.stage-extra') };
    stageRows.set(name, parts);
    return parts;
  }

  function renderStages(s, now) {
    for (const [name, stage] of Object.entries(s.stages)) {
      const parts = stageParts(name);
      if (parts.row.dataset.status !== stage.status) parts.row.dataset.status = stage.status;
      I.setText(parts.status, labels.stage_status[stage.status] || stage.status);
      const total = stage.total === null ? '?' : stage.total;
      setBar(parts.bar, stage.progress_percent, `${stage.processed} of ${total}`);
      setCounter(parts.count, `${stage.processed} / ${total}`, null, now);
      const plural = stage.errors === 1 ? '' : 's';
      I.setText(parts.extra,
        `${stage.errors} error${plural}${stage.skipped ? ` · ${stage.skipped} not run` : ''} · ` +
        `${stage.in_flight} in flight · ${I.duration(stage.duration_ms)}`);
    }
  }

  function renderStats(s, now) {
    for (const key of Object.keys(labels.stats)) {
      const node = $('stat-' + key);
      setCounter(node, s.stats[key], node.parentElement, now);
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
      I.stageChip(e.stage), ' ',
      I.el('span', { class: 'path', text: e.file }), ' ',
      I.el('span', { class: 'message', text: e.message }));
  }

  function renderErrors(s, now) {
    const list = $('error-list');
    if (model.errorsReset) {
      list.replaceChildren();
      model.newErrors = model.errors.length;
      model.errorsReset = false;
    }
    const fresh = Math.min(model.newErrors, model.errors.length);
    if (fresh) list.append(...model.errors.slice(model.errors.length - fresh).map(errorRow));
    model.newErrors = 0;
    while (list.childElementCount > MAX_ERROR_ROWS) list.firstElementChild.remove();
    const shown = list.childElementCount;
    setCounter($('error-count'), s.stats.errors, null, now);
    I.setHidden($('no-errors'), shown > 0 || s.stats.errors > 0);
    I.setText($('no-errors'), RUNNING.includes(s.status) ? 'No errors so far.' : 'No errors.');
    I.setHidden($('errors-truncated'), shown >= s.stats.errors);
    I.setText($('errors-shown'), shown);
    I.setText($('errors-total'), s.stats.errors);
  }

  function renderStrip() {
    const files = model.strip.splice(0);
    const items = files.reverse().map((file) => I.el('li', {}, I.el('img', {
      src: urls.thumbnail.replace('ITEM_ID', encodeURIComponent(file.item_id)),
      alt: file.path, title: file.path, decoding: 'async', width: 64, height: 64,
    })));
    // The item's row is committed before its `file` event is published, and its thumbnail written
    // before that: the images can be asked for at once.
    const strip = $('strip');
    strip.prepend(...items);
    while (strip.childElementCount > STRIP_SIZE) strip.lastElementChild.remove();
    I.setHidden($('strip-section'), false);
  }

  /** A watching session: how it watches, its last file, what it imported; and why it polls. */
  function renderWatch(s) {
    const w = s.status === STATUS.WATCHING ? s.watch : null;
    I.setHidden($('watch-line'), !w);
    I.setHidden($('watch-warning'), !(w && w.warning));
    if (!w) return;
    const last = w.last_file_at ? I.clock(w.last_file_at) : 'none yet';
    const how = w.mode === 'polling' ? 'by polling' : 'with inotify';
    const imported = w.imported ? ` · imported ${w.imported.added} added, ${w.imported.updated} updated` : '';
    I.setText($('watch-line'), `Watching for new files ${how} · last file: ${last}${imported}`);
    I.setText($('watch-warning'), w.warning || '');
  }

  function renderActions(s) {
    const running = RUNNING.includes(s.status);
    I.setHidden($('cancel'), !running);
    I.setHidden($('resume'), s.status !== STATUS.INTERRUPTED);
    if (!running) $('cancel').disabled = false;
    if (!running && $('action-status').textContent === 'Cancelling…') $('action-status').textContent = '';
    if (!window.IngestPreview) return;
    // A watch's review grows as it goes (Import N with it); another running session has none yet.
    if (running && s.status !== STATUS.WATCHING) window.IngestPreview.hide();
    else window.IngestPreview.show(urls, s);
  }

  function render(now) {
    frame = 0;
    const s = model.state;
    const { dirty } = model;
    if (dirty.progress) {
      renderLead(s);
      renderOverall(s, now);
      renderStats(s, now);
      renderWatch(s);
      renderActions(s);
    }
    if (dirty.stages) renderStages(s, now);
    if (dirty.errors || dirty.progress) renderErrors(s, now);
    if (dirty.strip) renderStrip();
    renderTiming(s);
    dirty.progress = dirty.stages = dirty.errors = dirty.strip = false;
    firstRender = false;
  }

  // -- start ---------------------------------------------------------------------------------

  const connection = I.connect({
    streamUrl: urls.stream,
    statusUrl: urls.status,
    lastEventId: page.state.last_event_id,
    status: () => model.state.status,
    onState(full, reset) { applyState(full, reset); schedule(); },
    onEvent(type, data, seq) { applyEvent(type, data, seq); schedule(); },
    onConnection: setConnection,
    onFinish() { model.dirty.progress = true; schedule(); },
  });

  $('cancel').addEventListener('click', cancel);
  $('resume').addEventListener('click', resume);
  addErrors(page.state.errors || []);
  setInterval(() => { if (RUNNING.includes(model.state.status)) schedule(); }, 1000); // elapsed, ETA
  connection.start(FINISHED.includes(model.state.status));
  schedule();
})();
