"""Watch folders (issue 20): how soon a new file is ingested, and what a watch costs in memory.

* ``latency``: the shipped gunicorn (``tests.servers.gunicorn``, gevent worker) watches a folder
  (``INGEST_WATCH_SETTLE`` at its default, 2 s); the bench writes ``--files`` JPEGs into it one
  after another (every other one in two halves with a pause, as a slow Samba or phone upload does,
  the rest under a temporary name renamed into place) and reads the session's SSE stream. Latency
  is from the end of a file's last write (the rename, or the close) to its ``file`` event arriving
  at the client; expected between the settle time and the settle time + 1 s.
* ``memory``: a watch on a tree of ``--tree`` empty files (100 directories), in a fresh process per
  size, in-process like ``flask ingest watch``: the files are recorded in the database as ingested
  items first (the bench writes the rows: running 100,000 files through the stages is not what is
  measured), then the watching session is resumed: its scan, inotify on every directory and a
  reconciliation scan every ``--rescan`` seconds over the whole tree. RSS (``/proc/self/statm``)
  is sampled every 0.25 s for ``--seconds``; the hub's largest lag is recorded too.

Raw results go to ``bench/results/watch-<time>.json``; Markdown tables are printed.

    .venv/bin/python bench/watch_bench.py latency --files 40
    .venv/bin/python bench/watch_bench.py memory --tree 1000,10000,100000 --seconds 60
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"


def load() -> float:
    return os.getloadavg()[0]


# -- latency ------------------------------------------------------------------------------------------


def jpeg(label: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((640, 480), 40).convert("RGB").save(out, "JPEG", quality=90, comment=label.encode())
    return out.getvalue()


def write_files(inbox: Path, count: int, gap: float, written: dict[str, float]) -> None:
    """Write ``count`` files, ``gap`` seconds apart; ``written[path] = time.time()`` of each last write."""
    for i in range(count):
        data, name = jpeg(f"bench {i}"), f"photo_{i:04d}.jpg"
        if i % 2:
            with (inbox / name).open("wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                time.sleep(0.5)
                out.write(data[len(data) // 2:])
        else:
            temporary = inbox / f".{name}.part"
            temporary.write_bytes(data)
            os.rename(temporary, inbox / name)
        written[f"inbox/{name}"] = time.time()
        time.sleep(gap)


def latency(files: int, gap: float) -> dict[str, Any]:
    import gevent

    from tests.servers import SSEClient, gunicorn

    with tempfile.TemporaryDirectory() as temporary:
        media = Path(temporary) / "media"
        inbox = media / "inbox"
        inbox.mkdir(parents=True)
        written: dict[str, float] = {}
        arrived: dict[str, float] = {}
        before = load()
        with gunicorn(Path(temporary) / "instance", media, {"INGEST_WORKERS": "2"}) as server:
            body = {"directory": str(inbox), "watch": True, "enable_nsfw_detection": False}
            session_id = server.request("POST", "/api/ingest/process", body)[1]["session_id"]
            server.wait_for_status(session_id, {"watching"})
            stream = SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0", timeout=60)
            writer = threading.Thread(target=write_files, args=(inbox, files, gap, written))
            writer.start()
            try:
                for event in stream.events():
                    if event["event"] == "file":
                        arrived[event["data"]["path"]] = event["received_at"]
                    if len(arrived) == files:
                        break
            finally:
                stream.close()
                writer.join()
            state = server.request("GET", f"/api/ingest/status/{session_id}")[1]
        gevent.sleep(0)
    seconds = sorted(arrived[path] - written[path] for path in written)
    return {
        "files": files, "gap_s": gap, "settle_s": 2.0, "load_before": before, "load_after": load(),
        "median_s": round(statistics.median(seconds), 3),
        "p99_s": round(seconds[min(len(seconds) - 1, round(0.99 * (len(seconds) - 1)))], 3),
        "min_s": round(seconds[0], 3), "max_s": round(seconds[-1], 3),
        "items": state["processed_files"], "mode": state["watch"]["mode"],
    }


# -- memory -------------------------------------------------------------------------------------------


def make_tree(root: Path, count: int) -> None:
    for i in range(count):
        directory = root / f"d{i // (max(count, 100) // 100):03d}"
        if i % (max(count, 100) // 100) == 0:
            directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(directory / f"f{i:06d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))


def seed(instance: Path, media: Path, tree: Path) -> str:
    """A watching session on ``tree`` whose files are all ingested items, left ``interrupted``."""
    from sqlalchemy import create_engine, insert

    from ingestapp.core.config import load_config
    from ingestapp.core.ids import new_id
    from ingestapp.core.parameters import IngestParameters
    from ingestapp.core.vocabulary import SessionStatus
    from ingestapp.stages.base import new_item_fields
    from ingestapp.store.models import IngestSession, Item
    from tests.auth_support import prepare_instance

    prepare_instance(instance)
    engine = create_engine(load_config({"INSTANCE_PATH": instance})["DATABASE_URL"])
    session_id = new_id()
    parameters = IngestParameters(str(tree), watch=True, enable_nsfw_detection=False).to_dict()
    state = {"session_id": session_id, "status": SessionStatus.INTERRUPTED, "message": None, "parameters": parameters,
             "errors": [], "stats": {}, "stages": {}, "timing": {"started_at": time.time(), "elapsed_ms": 0}}
    fields = new_item_fields()
    with engine.begin() as conn:
        conn.execute(insert(IngestSession).values(id=session_id, status="interrupted", parameters=parameters,
                                                  state=state, created_at=time.time(), last_event_id=0))
        rows = []
        for path in sorted(tree.rglob("*.jpg")):
            info = path.stat()
            relpath = path.relative_to(media).as_posix()
            rows.append({"id": new_id(), "session_id": session_id, "seq": len(rows), "root": str(media),
                         "path": relpath, "path_bytes": os.fsencode(relpath), "status": "ok",
                         "sha256": os.urandom(32).hex(), "fields": fields, "errors": [], "version": 1,
                         "size": info.st_size, "mtime_ns": info.st_mtime_ns})
            if len(rows) % 5000 == 0:
                conn.execute(insert(Item), rows)
                rows.clear()
        if rows:
            conn.execute(insert(Item), rows)
    engine.dispose()
    return session_id


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(instance: Path, media: Path, session_id: str, seconds: float, rescan: float) -> dict[str, Any]:
    """In a fresh process: resume the seeded watch and sample RSS and hub lag."""
    import gevent

    from ingestapp import create_app, shutdown

    app = create_app({"INSTANCE_PATH": instance, "MEDIA_ROOTS": [media], "WORKERS": 1, "WATCH_RESCAN": rescan})
    registry = app.extensions["ingest_jobs"]
    gevent.sleep(1)
    baseline = rss_mb()
    registry.resume(session_id)
    samples, lag, watching_lag, watching_at, watching_rss = [], 0.0, 0.0, None, 0.0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        gevent.sleep(0.25)
        late = time.monotonic() - tick - 0.25
        lag = max(lag, late)
        samples.append(rss_mb())
        if registry.state(session_id)["status"] == "watching":
            if watching_at is None:
                watching_at, watching_rss = time.monotonic() - started, samples[-1]
            else:
                watching_lag = max(watching_lag, late)
    state = registry.state(session_id)
    shutdown(app)
    return {"baseline_mb": round(baseline, 1), "peak_mb": round(max(samples), 1), "end_mb": round(samples[-1], 1),
            "status": state["status"], "mode": state["watch"]["mode"], "new_items": state["processed_files"],
            "hub_max_lag_ms": round(lag * 1000, 1), "watching_after_s": watching_at and round(watching_at, 1),
            "watching_mb": round(watching_rss, 1),
            "hub_max_lag_watching_ms": round(watching_lag * 1000, 1)}


def memory(sizes: list[int], seconds: float, rescan: float) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as temporary:
            media, instance = Path(temporary) / "media", Path(temporary) / "instance"
            make_tree(media / "tree", size)
            session_id = seed(instance, media, media / "tree")
            before = load()
            child = subprocess.run(
                [sys.executable, __file__, "memory-child", str(instance), str(media), session_id, str(seconds),
                 str(rescan)], capture_output=True, text=True, check=True, cwd=REPO,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results.append({"files": size, "seconds": seconds, "rescan_s": rescan, "load_before": before,
                            "load_after": load(), **result})
            print(f"tree of {size}: {results[-1]}", file=sys.stderr)
    return results


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="case", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--files", type=int, default=40)
    lat.add_argument("--gap", type=float, default=0.7, help="seconds between two files")
    mem = sub.add_parser("memory")
    mem.add_argument("--tree", default="1000,10000,100000")
    mem.add_argument("--seconds", type=float, default=60)
    mem.add_argument("--rescan", type=float, default=10, help="INGEST_WATCH_RESCAN for the run")
    child = sub.add_parser("memory-child")
    for name in ("instance", "media", "session_id", "seconds", "rescan"):
        child.add_argument(name)
    args = parser.parse_args()

    if args.case == "memory-child":
        result = memory_child(Path(args.instance), Path(args.media), args.session_id, float(args.seconds),
                              float(args.rescan))
        print(json.dumps(result))
        return
    if args.case == "latency":
        result: Any = latency(args.files, args.gap)
        print("| files | median | p99 | min | max | load before / after |\n|---|---|---|---|---|---|")
        print(f"| {result['files']} | {result['median_s']} s | {result['p99_s']} s | {result['min_s']} s | "
              f"{result['max_s']} s | {result['load_before']:.1f} / {result['load_after']:.1f} |")
    else:
        result = memory([int(n) for n in args.tree.split(",")], args.seconds, args.rescan)
        print("| files | RSS before the resume | once watching | peak | at the end | watching after | hub max lag: "
              "all / watching | load before / after |")
        print("|---|---|---|---|---|---|---|---|")
        for row in result:
            print(f"| {row['files']:,} | {row['baseline_mb']} MB | {row['watching_mb']} MB | {row['peak_mb']} MB | "
                  f"{row['end_mb']} MB | "
                  f"{row['watching_after_s']} s | {row['hub_max_lag_ms']} / {row['hub_max_lag_watching_ms']} ms | "
                  f"{row['load_before']:.1f} / {row['load_after']:.1f} |")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"watch-{args.case}-{stamp}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
