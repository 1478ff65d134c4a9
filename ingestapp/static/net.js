/* ingestapp: talking to the server — fetch with one retry, JSON, and CSRF-carrying POSTs. */
'use strict';

(function () {
  const I = window.Ingest;
  const RETRY_STATUSES = [502, 503, 504]; // a proxy while the server restarts
  const RETRY_MS = 250;

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** fetch a GET once more after a network error or a 502/503/504. */
  async function fetchOnceMore(url, options) {
    const method = (options && options.method) || 'GET';
    try {
      const response = await fetch(url, options);
      if (method !== 'GET' || !RETRY_STATUSES.includes(response.status)) return response;
    } catch (err) {
      if (method !== 'GET') throw err;
    }
    await sleep(RETRY_MS);
    return fetch(url, options);
  }

  /** fetch + JSON: resolves {status, body}; rejects only on a network failure. */
  async function fetchJSON(url, options) {
    const response = await fetchOnceMore(url, { credentials: 'same-origin', ...options });
    let body = null;
    if ((response.headers.get('Content-Type') || '').includes('application/json')) {
      body = await response.json();
    }
    return { status: response.status, body };
  }

  /** The page's CSRF token (<meta name="csrf-token">): every POST carries it as X-CSRFToken. */
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : '';
  }

  /** POST JSON with the CSRF header; the one way the page scripts change state. */
  function postJSON(url, body) {
    return fetchJSON(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRFToken': csrfToken() },
      body: JSON.stringify(body || {}),
    });
  }

  Object.assign(I, { fetchJSON, postJSON });
})();
