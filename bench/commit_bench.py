"""A big commit on a live server (issue 16, point 2): what a 50,000-item catalog commit costs the
other users of one gunicorn gevent worker (gunicorn.conf.py as shipped, SQLite).

The instance's database gets a finished session of ``--items`` ok items first, written straight in
(``tests/big_session.py``: distinct SHA-256s, three keywords and camera metadata each). A live
ingest of ``--files`` tiny JPEGs then runs (``INGEST_FILE_DELAY`` paces it), a viewer reads its
SSE stream, and a client sends ``GET /api/ingest/sessions?limit=5`` every 20 ms. After
``--before`` seconds the big session is committed (``POST /api/ingest/<id>/commit``). For the
window before the commit and the commit's own, the bench reports the API's latency (p50/p99/max)
and the viewer's event latency (the client's receipt minus the event's ``emitted_at``, same
clock), and the commit's duration and result. Results go to ``bench/results/commit-<time>.json``.

    .venv/bin/python bench/commit_bench.py --items 50000
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # the viewer, the API client and the commit run as greenlets

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestapp.core.config import load_config  # noqa: E402
from ingestapp.core.vocabulary import EventType  # noqa: E402
from tests.auth_support import prepare_instance  # noqa: E402
from tests.big_session import add_finished_session  # noqa: E402
from tests.factories import write_jpegs  # noqa: E402
from tests.servers import Server, SSEClient, gunicorn  # noqa: E402

RESULTS = Path(__file__).with_name("results")


def summary(samples: list[float]) -> dict[str, float | int]:
    """``{"n", "p50_ms", "p99_ms", "max_ms"}`` of ``samples`` (seconds)."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def api_client(server: Server, samples: list[tuple[float, float]], running: list[bool]) -> None:
    while running:
        started = time.time()
        status, _ = server.request("GET", "/api/ingest/sessions?limit=5")
        assert status == 200, status
        samples.append((started, time.time() - started))
        gevent.sleep(0.02)


def viewer(server: Server, session_id: str, samples: list[tuple[float, float]], running: list[bool]) -> None:
    stream = SSEClient(server.port, f"/api/ingest/stream/{session_id}")
    try:
        for event in stream.events():
            if event["event"] == EventType.PROGRESS:
                samples.append((event["data"]["emitted_at"], event["received_at"] - event["data"]["emitted_at"]))
            if not running:
                return
    finally:
        stream.close()


def commit(server: Server, session_id: str) -> tuple[int, dict]:
    """``POST /api/ingest/<id>/commit``, waiting as long as it takes (``Server.request`` gives up at 30 s)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    try:
        conn.request("POST", f"/api/ingest/{session_id}/commit", body=b"{}", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {server.token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def window(samples: list[tuple[float, float]], start: float, end: float) -> dict[str, float | int]:
    return summary([value for at, value in samples if start <= at < end])


def run(args: argparse.Namespace, base: Path) -> dict:
    instance, media = base / "instance", base / "media"
    write_jpegs(media, args.files)
    prepare_instance(instance)
    engine = create_engine(load_config({"INSTANCE_PATH": instance})["DATABASE_URL"])
    made = time.perf_counter()
    big = add_finished_session(engine, args.items)
    engine.dispose()
    print(f"{args.items} items written in {time.perf_counter() - made:.1f} s", flush=True)
    env = {"INGEST_FILE_DELAY": str(args.file_delay), "INGEST_WORKERS": "2"}
    with gunicorn(instance, media, env) as server:
        status, started = server.request("POST", "/api/ingest/process", {
            "directory": str(media), "enable_nsfw_detection": False, "skip_duplicates": False})
        assert status in (200, 202), started
        live = started["session_id"]
        api: list[tuple[float, float]] = []
        events: list[tuple[float, float]] = []
        running = [True]
        greenlets = [gevent.spawn(api_client, server, api, running),
                     gevent.spawn(viewer, server, live, events, running)]
        gevent.sleep(args.before)
        commit_start = time.time()
        status, result = commit(server, big)
        commit_end = time.time()
        gevent.sleep(1)
        running.clear()
        server.request("POST", f"/api/ingest/{live}/cancel", {})
        gevent.joinall(greenlets, timeout=10)
        assert status == 200, result
    return {
        "items": args.items, "commit_s": round(commit_end - commit_start, 2), "result": result,
        "before": {"api": window(api, commit_start - args.before, commit_start),
                   "events": window(events, commit_start - args.before, commit_start)},
        "during": {"api": window(api, commit_start, commit_end), "events": window(events, commit_start, commit_end)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=3000, help="files of the live ingest (outlasts the commit)")
    parser.add_argument("--file-delay", type=float, default=0.1, help="INGEST_FILE_DELAY of the live ingest")
    parser.add_argument("--before", type=float, default=5.0, help="seconds measured before the commit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run(args, Path(tmp))
    outcome.update(machine=f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
                   when=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"commit-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(outcome, indent=2))
    print(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
