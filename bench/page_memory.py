"""The session page over a long session, in Chromium: JS heap, DOM nodes, event-to-paint latency.

A real gunicorn (``tests.servers.gunicorn``, ``INGEST_FILE_DELAY=0``) ingests ``--files`` tiny
generated JPEGs (16x16, each unique) while headless Chromium (Debian's ``/usr/bin/chromium``,
Playwright) shows the session page. Through the DevTools protocol (``Performance.getMetrics``
after ``HeapProfiler.collectGarbage``) it reads the page's used JS heap and DOM node count once
500 files are done and again at the end: both must stay bounded (heap within 10 MB of the 500-file
figure). A third reading at 95 % (still running) separates the live view from the review grid
drawn at the end. An init script notes, for each ``progress`` event, the time from its ``emitted_at`` (the
server's clock, the same machine) to the first animation frame after the page applied it (the
page renders once per frame): the event-to-paint latency.

    .venv/bin/python bench/page_memory.py --files 5000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingestapp.core.vocabulary import FINISHED_STATUSES  # noqa: E402
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, SignedInBrowser  # noqa: E402
from tests.factories import write_jpeg  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

MB = 1024 * 1024
BASELINE_FILES = 500

#: Per progress event: seconds from its emitted_at to its arrival in the page, and to the frame
#: after the page's handler ran (this listener is added first, so the page's own runs after it).
LATENCY_JS = """(() => {
  window.__latency = [];
  const Original = window.EventSource;
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener('progress', (event) => {
        const emitted = JSON.parse(event.data).emitted_at;
        const arrived = Date.now() / 1000;
        const painted = () => window.__latency.push([arrived - emitted, Date.now() / 1000 - emitted]);
        requestAnimationFrame(() => setTimeout(painted));
      });
    }
  };
})();"""

DONE_JS = """() => [Number(document.getElementById('files-done').textContent),
  document.getElementById('status').dataset.status]"""


def metrics(cdp: Any) -> dict[str, float]:
    """The page's used JS heap (bytes) and DOM nodes, after a full garbage collection."""
    cdp.send("HeapProfiler.collectGarbage")
    values = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {"heap": values["JSHeapUsedSize"], "nodes": values["Nodes"]}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(files: int, workers: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        media = Path(tmp) / "media"
        for i in range(files):
            path = media / "many" / f"{i // 1000:02d}" / f"f{i:05d}.jpg"
            write_jpeg(path, size=(16, 16), color=(i % 256, i // 256 % 256, 7))
        env = {"INGEST_FILE_DELAY": "0", "INGEST_WORKERS": str(workers)}
        with gunicorn(Path(tmp) / "instance", media, env) as server, sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            base = f"http://127.0.0.1:{server.port}"
            browser = SignedInBrowser(chromium, base, server.username, server.password)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(LATENCY_JS)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            body = {"directory": str(media / "many"), "enable_nsfw_detection": False, "skip_duplicates": False}
            started = time.monotonic()
            session_id = server.request("POST", "/api/ingest/process", {"parameters": body})[1]["session_id"]
            page.goto(f"{base}/ingest/{session_id}")
            baseline = late = None
            while True:
                done, status = page.evaluate(DONE_JS)
                if baseline is None and done >= BASELINE_FILES:
                    baseline = {**metrics(cdp), "done": done}
                if late is None and done >= 0.95 * files:  # still running: before the review grid is drawn
                    late = {**metrics(cdp), "done": done}
                if status in FINISHED_STATUSES:
                    break
                page.wait_for_timeout(250)
            elapsed = time.monotonic() - started
            page.wait_for_timeout(1000)  # the last frames
            final = {**metrics(cdp), "done": done}
            latency = page.evaluate("() => window.__latency")
            chromium.close()
    return {"files": files, "elapsed_s": elapsed, "baseline": baseline, "late": late, "final": final,
            "latency": latency}


def report(result: dict[str, Any]) -> str:
    base, late, final, lat = result["baseline"], result["late"], result["final"], result["latency"]
    arrival = [1000 * a for a, _ in lat]
    ms = [1000 * p for _, p in lat]
    own = [1000 * (p - a) for a, p in lat]
    return "\n".join([
        f"{result['files']} files in {result['elapsed_s']:.1f} s ({result['files'] / result['elapsed_s']:.0f} files/s)",
        f"JS heap at {base['done']} files: {base['heap'] / MB:.2f} MB; at {final['done']}: {final['heap'] / MB:.2f} MB "
        f"(+{(final['heap'] - base['heap']) / MB:.2f} MB)",
        f"JS heap at {late['done']} files (running): {late['heap'] / MB:.2f} MB",
        f"DOM nodes at {base['done']} files: {base['nodes']:.0f}; at {late['done']} (running): {late['nodes']:.0f}; "
        f"at the end, with the review grid: {final['nodes']:.0f}",
        *(f"{name} over {len(ms)} progress events: p50 {statistics.median(v):.0f} ms, "
          f"p99 {percentile(v, 99):.0f} ms, max {max(v):.0f} ms"
          for name, v in (("emitted → arrived", arrival), ("arrived → painted", own), ("emitted → painted", ms))),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="INGEST_WORKERS of the server")
    args = parser.parse_args()
    result = run(args.files, args.workers)
    print(report(result))
    growth = result["final"]["heap"] - result["baseline"]["heap"]
    sys.exit(0 if growth < 10 * MB else 1)


if __name__ == "__main__":
    main()
