/* ingestapp: the live connection of a session page — EventSource, polling, backoff, watchdog.
 *
 * Ingest.connect(options) keeps one session's updates coming and says how (`onConnection`):
 *   live         the event stream (EventSource) delivers; the browser's reconnection resumes it
 *                with Last-Event-ID (WHATWG HTML §9.2).
 *   reconnecting the stream broke and is being reopened.
 *   polling      the stream keeps failing, is missing or is held back by a buffering proxy: the
 *                status is fetched every second while the stream is retried with backoff (1, 2,
 *                4, 8 s, then every 8 s), so the page is live again within 15 s of the server.
 *   offline      the server cannot be reached at all (both stream and status fail).
 *   closed       the session ended; nothing more will come.
 * It knows nothing of the page: the view gets states and events through the callbacks.
 */
'use strict';

(function () {
  const I = window.Ingest;
  const FINISHED = I.vocabulary.finished_statuses;
  const RUNNING = I.vocabulary.running_statuses;
  const EVENT_TYPES = I.vocabulary.event_types.filter((type) => type !== 'error'); // 'error': below
  const TERMINAL_EVENTS = I.vocabulary.terminal_events;
  const FAILURES_BEFORE_POLLING = 5; // stream errors in a row, with no event in between…
  const FAILING_MS_BEFORE_POLLING = 8000; // …over at least this long (a short outage stays live)
  const STALL_MS = 3000; // no event for this long while the server's log advanced: a stall
  const POLL_MS = 1000;
  const PROBE_BACKOFF_MS = [1000, 2000, 4000, 8000]; // then the last one again and again
  const STALLED_PROBE_MS = 60000; // behind a buffering proxy, try the stream again rarely

  /**
   * options: {streamUrl, statusUrl, lastEventId, status(), onState(state, reset),
   *           onEvent(type, data, seq), onConnection(state, note), onFinish()}
   * status() returns the status on screen (the watchdog only runs while it is running).
   */
  function connect(options) {
    const conn = {
      mode: 'sse', // sse | polling | done
      source: null,
      lastSeq: options.lastEventId, // the stream position: only stream events move it
      failures: 0,
      probes: 0,
      stalls: 0,
      stalled: false,
      lastEventAt: 0,
      lastGoodAt: performance.now(), // the stream last opened or delivered
      pollTimer: 0,
      probeTimer: 0,
      reconnectTimer: 0,
      state: null,
    };

    function setConnection(state, note) {
      if (conn.state === state && note === undefined) return;
      conn.state = state;
      options.onConnection(state, note);
    }

    // -- the stream --------------------------------------------------------------------------

    function onStreamEvent(event) {
      conn.failures = 0;
      conn.probes = 0;
      conn.stalls = 0;
      conn.lastEventAt = conn.lastGoodAt = performance.now();
      if (conn.mode === 'polling') leavePolling(); // a probe got through
      if (conn.mode !== 'sse') return;
      const data = JSON.parse(event.data);
      if (event.type === 'snapshot') {
        conn.lastSeq = data.last_event_id;
        options.onState(data, data.reset);
      } else {
        const seq = Number(event.lastEventId) || data.seq;
        if (seq <= conn.lastSeq) return; // already seen (a replay overlaps)
        conn.lastSeq = seq;
        options.onEvent(event.type, data, seq);
      }
      setConnection('live');
      if (TERMINAL_EVENTS.includes(event.type) || FINISHED.includes(options.status())) finish();
    }

    /** Open the stream; `resume` continues after the last event seen instead of a snapshot. */
    function openStream(resume) {
      closeStream();
      const url = resume ? `${options.streamUrl}?last_event_id=${conn.lastSeq}` : options.streamUrl;
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
        if (conn.source !== source) return;
        if (conn.mode === 'polling') leavePolling();
        if (conn.mode !== 'sse') return;
        conn.lastGoodAt = performance.now();
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
      if (conn.mode === 'polling') { // a probe failed: keep polling, probe again later
        closeStream();
        scheduleProbe();
        return;
      }
      if (conn.failures >= FAILURES_BEFORE_POLLING && performance.now() - conn.lastGoodAt >= FAILING_MS_BEFORE_POLLING) {
        startPolling('The live stream keeps failing, so this page is checking for updates every second ' +
          'and keeps trying to go live again.');
        return;
      }
      setConnection('reconnecting');
      const closed = source.readyState === EventSource.CLOSED; // the browser gave up (an HTTP error)
      if (closed) closeStream();
      recheck(closed);
    }

    /** After a stream error: is the server there at all? Reopen the stream ourselves if needed. */
    async function recheck(reopen) {
      const status = await loadStatus();
      if (conn.mode !== 'sse') return;
      if (!status) setConnection('offline');
      if (status && FINISHED.includes(status.status)) {
        options.onState(status, false);
        finish();
        return;
      }
      if (reopen) conn.reconnectTimer = setTimeout(() => { if (conn.mode === 'sse') openStream(true); }, 2000);
    }

    /** Take the status when it is at our stream position but says something else: a job stopped
     * by a server shutdown becomes "interrupted" without an event. Returns the status (or null). */
    async function syncStatus() {
      const status = await loadStatus();
      if (!status || conn.mode !== 'sse') return null;
      if (status.last_event_id === conn.lastSeq && status.status !== options.status()) options.onState(status, false);
      return status;
    }

    /** A buffering proxy lets the stream open but holds its events: notice it, then poll. */
    async function watchdog() {
      if (conn.mode !== 'sse' || !conn.source || !RUNNING.includes(options.status())) return;
      if (performance.now() - conn.lastEventAt < STALL_MS) return;
      const status = await syncStatus();
      if (!status || performance.now() - conn.lastEventAt < STALL_MS) return;
      if (status.last_event_id <= conn.lastSeq) { conn.stalls = 0; return; }
      conn.stalls += 1;
      if (conn.stalls >= 2) {
        conn.stalled = true; // the stream gets through but late: probe it only rarely
        startPolling('Live updates are being held back on the way (a buffering proxy?), ' +
          'so this page is checking for updates every second.');
      }
    }

    // -- polling -----------------------------------------------------------------------------

    async function loadStatus() {
      try {
        const { status, body } = await I.fetchJSON(options.statusUrl, { cache: 'no-store' });
        return status === 200 ? body : null;
      } catch (err) {
        return null;
      }
    }

    function startPolling(note) {
      closeStream();
      conn.mode = 'polling';
      setConnection('polling', note);
      poll();
      scheduleProbe();
    }

    async function poll() {
      clearTimeout(conn.pollTimer);
      if (conn.mode !== 'polling') return;
      const status = await loadStatus();
      if (conn.mode !== 'polling') return;
      if (status) {
        options.onState(status, false);
        setConnection('polling');
        if (FINISHED.includes(status.status)) { finish(); return; }
      } else {
        setConnection('offline');
      }
      conn.pollTimer = setTimeout(poll, options.status() === 'interrupted' ? 5 * POLL_MS : POLL_MS);
    }

    function leavePolling() {
      clearTimeout(conn.pollTimer);
      clearTimeout(conn.probeTimer);
      conn.mode = 'sse';
      conn.stalled = false;
    }

    /** While polling, try the stream again: quickly at first, then every 8 s. */
    function scheduleProbe() {
      clearTimeout(conn.probeTimer);
      if (!window.EventSource) return;
      const delay = conn.stalled
        ? STALLED_PROBE_MS
        : PROBE_BACKOFF_MS[Math.min(conn.probes, PROBE_BACKOFF_MS.length - 1)];
      conn.probes += 1;
      conn.probeTimer = setTimeout(() => { if (conn.mode === 'polling') openStream(true); }, delay);
    }

    // -- the end -----------------------------------------------------------------------------

    function finish() {
      if (conn.mode === 'done') return;
      conn.mode = 'done';
      closeStream();
      clearTimeout(conn.pollTimer);
      clearTimeout(conn.probeTimer);
      setConnection('closed');
      loadStatus().then((status) => { if (status) options.onState(status, false); }); // as persisted
      options.onFinish();
    }

    // -- start -------------------------------------------------------------------------------

    setInterval(watchdog, 1000);
    window.addEventListener('offline', () => { if (conn.mode !== 'done') setConnection('offline'); });
    window.addEventListener('online', () => { // try at once instead of waiting for the backoff
      if (conn.mode === 'polling') { conn.probes = 0; poll(); scheduleProbe(); } else if (conn.mode === 'sse') openStream(true);
    });
    // Back/forward cache: let the page be cached without its stream, and resume when it returns.
    window.addEventListener('pagehide', (event) => { if (event.persisted) closeStream(); });
    window.addEventListener('pageshow', (event) => {
      if (!event.persisted) return;
      if (conn.mode === 'sse') { setConnection('reconnecting'); openStream(true); } else if (conn.mode === 'polling') poll();
    });

    return {
      /** Begin: `finished` sessions only fetch their final status once. */
      start(finished) {
        if (finished) finish();
        else if (!window.EventSource) {
          startPolling('This browser cannot stream updates, so this page is checking for updates every second.');
        } else {
          setConnection('reconnecting', null);
          openStream(false);
        }
      },
      /** A resumed session runs again: follow it. */
      resume() {
        if (conn.mode === 'done') { conn.mode = 'sse'; openStream(true); return; }
        if (conn.mode === 'polling') poll();
        else if (!conn.source) openStream(true);
      },
    };
  }

  I.connect = connect;
})();
