/* ingestapp: open a running session's event stream while the page is still loading.
 *
 * Loaded `async` from the session page's <head> (data-stream: the stream URL), so the stream's
 * request starts before the other scripts have run; every event it gets meanwhile is held, in
 * order, until connection.js adopts the stream (`IngestEarlyStream.adopt()`) and replays them. */
'use strict';

(function () {
  if (!window.EventSource) return;
  const url = document.currentScript.dataset.stream;
  const types = JSON.parse(document.getElementById('vocabulary').textContent).event_types;
  const source = new EventSource(url);
  const held = [];
  const hold = (event) => held.push(event);
  for (const type of types) source.addEventListener(type, hold); // `error` too: a failure is held as well

  // Signing out before connection.js took the stream over: close it first (connection.js does after).
  document.addEventListener('submit', (event) => {
    if (window.IngestEarlyStream && event.target.matches('form.signout')) source.close();
  });

  window.IngestEarlyStream = {
    url,
    /** Take the stream over: returns {source, held} and stops holding. */
    adopt() {
      for (const type of types) source.removeEventListener(type, hold);
      window.IngestEarlyStream = null;
      return { source, held };
    },
  };
})();
