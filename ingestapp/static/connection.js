/* ingestapp: the live connection of a session page — one state machine over EventSource and polling.
 *
 * Ingest.connect(options) keeps one session's updates coming and says how (`onConnection`):
 *   live         the event stream (EventSource) delivers; a reopened stream resumes after the last
 *                event seen (?last_event_id=, WHATWG HTML §9.2).
 *   reconnecting the stream broke and is being reopened while the status says the server is there.
 *   polling      the stream keeps failing, is missing or is held back by a buffering proxy: the
 *                status is fetched every second and the stream tried again with backoff.
 *   offline      the server cannot be reached: only the status is tried, with backoff, and the
 *                badge stays "offline" (no flicker) until it answers.
 *   closed       the session ended; nothing more will come.
 *   signedOut    the page's Sign out form is being sent: the stream is closed first, so the
 *                server need not end it and no retry races the sign-out (the server ends it anyway).
 * Every change goes through TRANSITIONS (state × event → next state); arriving in a state runs
 * its ENTER action. Retries back off 0.5, 1, 2, 4, then 5 s (+ up to 0.5 s of jitter), so the
 * first try after the server returns comes within 6 s however long it was gone.
 * It knows nothing of the page: the view gets states and events through the callbacks.
 */
'use strict';

(function () {
  const I = window.Ingest;
  const V = I.vocabulary;
  const FINISHED = V.finished_statuses;
  const RUNNING = V.running_statuses;
  const ERROR_EVENT = V.event_type.ERROR; // shares its name with EventSource's own failures
  const STREAM_EVENTS = V.event_types.filter((type) => type !== ERROR_EVENT);
  const FAILURES_BEFORE_POLLING = 5; // stream errors in a row while the status answers…
  const FAILING_MS_BEFORE_POLLING = 8000; // …over at least this long (a short outage stays live)
  const STALL_MS = 3000; // no event for this long while the server's log advanced: a stall
  const POLL_MS = 1000;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 5000;
  const JITTER_MS = 500;
  const STALLED_PROBE_MS = 60000; // behind a buffering proxy, try the stream again rarely
  const SYNC_AFTER_OPEN_MS = 500; // let a replay land before comparing with the status

  /** The connection states (the badge's data-connection values; IDLE is before start()). */
  const S = {
    IDLE: 'idle', LIVE: 'live', RECONNECTING: 'reconnecting', POLLING: 'polling', OFFLINE: 'offline', CLOSED: 'closed',
    SIGNED_OUT: 'signed-out',
  };

  /** state → {event → next state}. An event a state does not list changes nothing there. */
  const TRANSITIONS = {
    [S.IDLE]: { start: S.RECONNECTING, noStream: S.POLLING, finished: S.CLOSED },
    [S.LIVE]: {
      message: S.LIVE, streamError: S.RECONNECTING, streamFailing: S.RECONNECTING, stalled: S.POLLING,
      networkDown: S.OFFLINE, restore: S.RECONNECTING, resumed: S.LIVE, finished: S.CLOSED,
    },
    [S.RECONNECTING]: {
      open: S.LIVE, message: S.LIVE, streamError: S.RECONNECTING, streamFailing: S.POLLING, stalled: S.POLLING,
      statusFailed: S.OFFLINE, networkDown: S.OFFLINE, restore: S.RECONNECTING, resumed: S.RECONNECTING,
      finished: S.CLOSED,
    },
    [S.OFFLINE]: {
      open: S.LIVE, message: S.LIVE, statusOk: S.RECONNECTING, statusFailed: S.OFFLINE, networkUp: S.OFFLINE,
      restore: S.OFFLINE, resumed: S.OFFLINE, finished: S.CLOSED,
    },
    [S.POLLING]: {
      open: S.LIVE, message: S.LIVE, streamError: S.POLLING, streamFailing: S.POLLING, statusOk: S.POLLING,
      statusFailed: S.OFFLINE, networkDown: S.OFFLINE, networkUp: S.POLLING, restore: S.POLLING,
      resumed: S.POLLING, finished: S.CLOSED,
    },
    [S.CLOSED]: { resumed: S.RECONNECTING },
    [S.SIGNED_OUT]: {}, // the page is leaving: nothing reopens the stream
  };
  // Signing out leaves every state but the last.
  for (const state of Object.values(S)) if (state !== S.SIGNED_OUT) TRANSITIONS[state].signOut = S.SIGNED_OUT;

  /** Why the page polls, by the event that made it. */
  const POLLING_NOTES = {
    noStream: 'This browser cannot stream updates, so this page is checking for updates every second.',
    streamFailing: 'The live stream keeps failing, so this page is checking for updates every second ' +
      'and keeps trying to go live again.',
    stalled: 'Live updates are being held back on the way (a buffering proxy?), ' +
      'so this page is checking for updates every second.',
  };

  /** Delay before retry number `n` (1, 2, …): exponential, capped, jittered so tabs spread out. */
  function backoff(n) {
    return Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (n - 1)) + Math.random() * JITTER_MS;
  }

  /**
   * options: {streamUrl, statusUrl, lastEventId, status(), onState(state, reset),
   *           onEvent(type, data, seq), onConnection(state, note), onFinish()}
   * status() returns the status on screen (the watchdog only runs while it is running).
   */
  function connect(options) {
    const conn = {
      state: S.IDLE,
      source: null,
      lastSeq: options.lastEventId, // the stream position: only stream events move it
      failures: 0, // stream failures since it last delivered
      failingSince: 0,
      retries: 0, // status tries while offline, stream probes while polling
      stalls: 0,
      stalled: false,
      lastEventAt: performance.now(),
      timer: 0, // the one pending retry: a stream reopen or probe, or a status try
      pollTimer: 0,
    };

    function dispatch(event) {
      const from = conn.state;
      const to = (TRANSITIONS[from] || {})[event];
      if (!to) return;
      conn.state = to;
      ENTER[to](from, event);
    }

    function announce(from, note) {
      if (from !== conn.state || note !== undefined) options.onConnection(conn.state, note);
    }

    // -- arriving in a state -------------------------------------------------------------------

    const ENTER = {
      [S.LIVE](from) {
        if (from === S.LIVE) return;
        clearTimers();
        const wasFailing = conn.failures > 0 || from !== S.RECONNECTING;
        conn.failures = conn.retries = conn.stalls = 0;
        conn.stalled = false;
        announce(from);
        // Back after a failure: the server may have restarted meanwhile (a job it stopped became
        // "interrupted" without an event).
        if (wasFailing) setTimeout(syncStatus, SYNC_AFTER_OPEN_MS);
      },
      [S.RECONNECTING](from, event) {
        clearTimers();
        announce(from, from === S.IDLE ? null : undefined);
        if (event === 'streamError') { // is the server there at all? (statusFailed → offline)
          conn.timer = setTimeout(() => openStream(true), backoff(conn.failures));
          checkStatus();
          return;
        }
        openStream(from !== S.IDLE); // started, back from offline, restored or resumed: at once
      },
      [S.OFFLINE](from, event) {
        clearTimers();
        closeStream();
        announce(from);
        if (event === 'networkUp') conn.retries = 0;
        conn.retries += 1;
        const delay = event === 'networkUp' ? 0 : from === S.OFFLINE ? backoff(conn.retries) : POLL_MS;
        conn.timer = setTimeout(checkStatus, delay);
      },
      [S.POLLING](from, event) {
        if (event === 'statusOk') { conn.pollTimer = setTimeout(poll, POLL_MS); return; }
        if (event === 'networkUp' || event === 'resumed') { conn.retries = 0; poll(); probeLater(); return; }
        closeStream();
        if (from === S.POLLING) { probeLater(); return; } // a probe failed
        clearTimers();
        conn.stalled = event === 'stalled';
        conn.retries = 0;
        announce(from, POLLING_NOTES[event]);
        poll();
        probeLater();
      },
      [S.SIGNED_OUT]() {
        clearTimers();
        closeStream();
      },
      [S.CLOSED](from) {
        clearTimers();
        closeStream();
        announce(from);
        loadStatus().then((status) => { if (status) options.onState(status, false); }); // as persisted
        options.onFinish();
      },
    };

    function clearTimers() {
      clearTimeout(conn.timer);
      clearTimeout(conn.pollTimer);
    }

    // -- the stream ------------------------------------------------------------------------------

    /** Open the stream; `resume` continues after the last event seen instead of a snapshot. The
     * first one may already be open (stream-early.js): it is adopted and its held events replayed. */
    function openStream(resume) {
      closeStream();
      const url = resume ? `${options.streamUrl}?last_event_id=${conn.lastSeq}` : options.streamUrl;
      const early = window.IngestEarlyStream;
      const adopted = !resume && early && early.url === url ? early.adopt() : null;
      const source = adopted ? adopted.source : new EventSource(url);
      conn.source = source;
      const onError = (event) => { // a MessageEvent named `error` is a failed file, a plain Event a failure
        if (event instanceof MessageEvent) onStreamEvent(event);
        else if (source === conn.source) onStreamError();
      };
      for (const type of STREAM_EVENTS) source.addEventListener(type, onStreamEvent);
      source.addEventListener(ERROR_EVENT, onError);
      source.onopen = () => { if (source === conn.source) dispatch('open'); };
      if (!adopted) return;
      if (source.readyState === EventSource.OPEN) dispatch('open');
      for (const event of adopted.held) {
        if (source !== conn.source) return; // a held failure closed it
        if (event.type === ERROR_EVENT) onError(event);
        else onStreamEvent(event);
      }
    }

    function closeStream() {
      if (conn.source) conn.source.close();
      conn.source = null;
    }

    /** Every failure closes the stream: this machine, not the browser, decides when to retry. */
    function onStreamError() {
      closeStream();
      if (conn.failures === 0) conn.failingSince = performance.now();
      conn.failures += 1;
      const failing = conn.failures >= FAILURES_BEFORE_POLLING &&
        performance.now() - conn.failingSince >= FAILING_MS_BEFORE_POLLING;
      dispatch(failing ? 'streamFailing' : 'streamError');
    }

    function onStreamEvent(event) {
      conn.lastEventAt = performance.now();
      dispatch('message');
      const data = JSON.parse(event.data);
      if (event.type === V.event_type.SNAPSHOT) {
        conn.lastSeq = data.last_event_id;
        options.onState(data, data.reset);
      } else {
        const seq = Number(event.lastEventId) || data.seq;
        if (seq <= conn.lastSeq) return; // already seen (a replay overlaps)
        conn.lastSeq = seq;
        options.onEvent(event.type, data, seq);
      }
      if (V.terminal_events.includes(event.type) || FINISHED.includes(options.status())) dispatch('finished');
    }

    // -- the status --------------------------------------------------------------------------------

    async function loadStatus() {
      try {
        const { status, body } = await I.fetchJSON(options.statusUrl, { cache: 'no-store' });
        return status === 200 ? body : null;
      } catch (err) {
        return null;
      }
    }

    /** Ask the status once; a finished session ends here, else the answer is statusOk/statusFailed. */
    async function checkStatus() {
      const status = await loadStatus();
      if (status && conn.state !== S.LIVE) options.onState(status, false);
      if (status && FINISHED.includes(status.status)) dispatch('finished');
      else dispatch(status ? 'statusOk' : 'statusFailed');
    }

    async function poll() {
      clearTimeout(conn.pollTimer);
      if (conn.state === S.POLLING) await checkStatus();
    }

    /** While polling, try the stream again: with backoff, or rarely behind a buffering proxy. */
    function probeLater() {
      clearTimeout(conn.timer);
      if (!window.EventSource) return;
      conn.retries += 1;
      const delay = conn.stalled ? STALLED_PROBE_MS : backoff(conn.retries);
      conn.timer = setTimeout(() => { if (conn.state === S.POLLING) openStream(true); }, delay);
    }

    /** Take the status when it is at our stream position but says something else. Returns it (or null). */
    async function syncStatus() {
      const status = await loadStatus();
      if (!status || conn.state === S.POLLING || conn.state === S.CLOSED) return null;
      if (status.last_event_id === conn.lastSeq && status.status !== options.status()) options.onState(status, false);
      if (FINISHED.includes(status.status) && status.last_event_id === conn.lastSeq) dispatch('finished');
      return status;
    }

    /** A buffering proxy holds the stream's events (or its very start) back: notice it, then poll. */
    async function watchdog() {
      const streaming = conn.state === S.LIVE || (conn.state === S.RECONNECTING && conn.source);
      if (!streaming || !RUNNING.includes(options.status())) return;
      if (performance.now() - conn.lastEventAt < STALL_MS) return;
      const status = await syncStatus();
      if (!status || performance.now() - conn.lastEventAt < STALL_MS) return;
      if (status.last_event_id <= conn.lastSeq) { conn.stalls = 0; return; }
      conn.stalls += 1;
      if (conn.stalls >= 2) dispatch('stalled');
    }

    // -- the browser -------------------------------------------------------------------------------

    setInterval(watchdog, 1000);
    window.addEventListener('offline', () => dispatch('networkDown'));
    window.addEventListener('online', () => dispatch('networkUp')); // try at once, not after the backoff
    // Back/forward cache: let the page be cached without its stream, and resume when it returns.
    window.addEventListener('pagehide', (event) => { if (event.persisted) { clearTimers(); closeStream(); } });
    window.addEventListener('pageshow', (event) => { if (event.persisted) dispatch('restore'); });
    // The header's Sign out form (base.html): close the stream before the form is sent.
    document.addEventListener('submit', (event) => { if (event.target.matches('form.signout')) dispatch('signOut'); });

    return {
      /** Begin: `finished` sessions only fetch their final status once. */
      start(finished) {
        dispatch(finished ? 'finished' : window.EventSource ? 'start' : 'noStream');
      },
      /** A resumed session runs again: follow it. */
      resume() {
        dispatch('resumed');
      },
    };
  }

  I.connect = connect;
})();
