/* ingestapp: the sessions list stays current while any session is running. */
'use strict';

(function () {
  const { el, fetchJSON, percent, when, vocabulary } = window.Ingest;
  const table = document.getElementById('sessions');
  if (!table) return;
  const labels = JSON.parse(table.dataset.labels);
  const RUNNING = vocabulary.running_statuses;
  const REFRESH_MS = 2000;
  function cell(label, ...children) {
    return el('td', { 'data-label': label }, ...children);
  }

  /** "Imported <time> — N added, M updated, K excluded", or a dash. */
  function imported(s) {
    const r = s.commit_result;
    if (!s.committed_at || !r) return '—';
    return el('span', {}, 'Imported ',
      el('time', { datetime: new Date(s.committed_at * 1000).toISOString(), text: when(s.committed_at) }),
      ` — ${r.added} added, ${r.updated} updated, ${r.excluded} excluded`);
  }

  function row(s) {
    const href = table.dataset.sessionUrl.replace('SESSION_ID', encodeURIComponent(s.session_id));
    return el('tr', { 'data-status': s.status },
      cell('Started', el('time', { datetime: new Date(s.created_at * 1000).toISOString(), text: when(s.created_at) })),
      cell('Directory', el('a', { class: 'path', href, text: s.directory })),
      cell('Status', el('span', { class: 'status', 'data-status': s.status, text: labels[s.status] || s.status })),
      cell('Progress', percent(s.progress_percent)),
      cell('Files', `${s.processed_files} / ${s.total_files}`),
      cell('Errors', String(s.errors)),
      cell('Imported', imported(s)));
  }

  async function refresh() {
    try {
      const { status, body } = await fetchJSON(table.dataset.url, { cache: 'no-store' });
      if (status === 200) {
        document.getElementById('sessions-body').replaceChildren(...body.sessions.map(row));
        table.hidden = body.sessions.length === 0;
        document.getElementById('sessions-empty').hidden = body.sessions.length > 0;
      }
    } catch (err) {
      // offline for a moment: the next round tries again
    }
    schedule();
  }

  function schedule() {
    const running = table.querySelector(RUNNING.map((s) => `tr[data-status="${s}"]`).join(','));
    if (running) setTimeout(refresh, REFRESH_MS);
  }

  // Re-render once so that times are in the browser's time zone, then follow running sessions.
  refresh();
})();
