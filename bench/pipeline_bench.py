"""Pipeline throughput benchmark: the ingest job run in-process, as ``flask ingest run`` runs it.

For each run a fresh app (temporary instance directory, the corpus as its only media root) starts
one job through ``JobRegistry.start`` and joins its greenlet, while a ticker greenlet sleeps 5 ms
at a time and records how late the hub wakes it (the hub loop lag: how long the hub was kept
from other work, e.g. serving SSE streams in the server). Two modes, alternating run by run:

* ``metadata``: extract_keywords, import_scores and enable_nsfw_detection off, skip_duplicates off;
* ``full``: every stage on (keywords, scores, NSFW, duplicate skipping).

Each mode runs with every pool size asked for (``--pool-sizes``, default 1 and 2: ``INGEST_WORKERS``
worker processes, at ``INGEST_WORKER_NICE``), and the table gives each size's rate against one
process's. One unmeasured warm-up run per (pool size, mode) comes first (it starts the pool's
processes, which load the NSFW model once each). The
directory defaults to ``shared/corpus/camera-samples`` beside the repository (read in place, never copied), else
the generated sample set (``ingestapp.cli.samples.write_samples``). Like the CLI, no monkey-patching.

Each run also records every event's publish delay: from its ``emitted_at`` (stamped when the job
emits it) to its publication on the ``job-event`` signal, which waits for the commit that makes it
durable (group commit, ``jobs.Job._write_continuously``).

    .venv/bin/python bench/pipeline_bench.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
from flask import Flask

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingestapp import create_app, shutdown  # noqa: E402
from ingestapp.core.parameters import parse_parameters  # noqa: E402
from ingestapp.core.vocabulary import SessionStatus  # noqa: E402
from ingestapp.events.model import job_event  # noqa: E402
from ingestapp.work.pool import close_all  # noqa: E402

#: The team's shared sample media beside the repository (``shared/`` next to its root), as the tests find it.
CORPUS = REPO.parent / "shared" / "corpus" / "camera-samples"
TICK = 0.005  # seconds the ticker sleeps between lag samples
MODES: dict[str, dict[str, bool]] = {
    "metadata": {
        "extract_keywords": False,
        "import_scores": False,
        "enable_nsfw_detection": False,
        "skip_duplicates": False,
    },
    "full": {
        "extract_metadata": True,
        "extract_keywords": True,
        "import_scores": True,
        "enable_nsfw_detection": True,
        "skip_duplicates": True,
    },
}


class LagTicker:
    """A greenlet that sleeps ``TICK`` repeatedly and keeps the largest and all overshoots (s)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            before = time.perf_counter()
            gevent.sleep(TICK)
            self.lags.append(max(0.0, time.perf_counter() - before - TICK))

    def stop(self) -> dict[str, float]:
        """Stop ticking; the max and p99 lag in ms."""
        self._greenlet.kill()
        lags = sorted(self.lags) or [0.0]
        return {
            "max_lag_ms": round(lags[-1] * 1000, 2),
            "p99_lag_ms": round(lags[int(0.99 * (len(lags) - 1))] * 1000, 2),
        }


@contextmanager
def fresh_app(directory: Path, workers: int) -> Iterator[Flask]:
    """An app on a temporary instance, with ``directory`` as its media root and ``workers``."""
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        config = {"INSTANCE_PATH": Path(tmp) / "instance", "MEDIA_ROOTS": [directory], "WORKERS": workers}
        app = create_app(config)
        try:
            yield app
        finally:
            shutdown(app)
            app.extensions["ingest_broker"].disconnect()
            app.extensions["ingest_db"].dispose()


def run_once(directory: Path, mode: str, workers: int) -> dict[str, Any]:
    """One job over ``directory`` in ``mode`` with ``workers`` processes: wall time, files/s, hub lag, counts."""
    with fresh_app(directory, workers) as app:
        registry = app.extensions["ingest_jobs"]
        parameters = parse_parameters({"directory": str(directory), **MODES[mode]}, registry.media_roots)
        delays: list[float] = []

        def on_event(_sender: str, event: Any) -> None:
            delays.append(time.time() - json.loads(event.data)["emitted_at"])

        job_event.connect(on_event)
        ticker = LagTicker()
        started = time.perf_counter()
        job = registry.jobs[registry.start(parameters, here=True)]
        job.greenlet.join(timeout=600)
        seconds = time.perf_counter() - started
        lag = ticker.stop()
        job_event.disconnect(on_event)
        state = registry.state(job.session_id)
    if state["status"] != SessionStatus.COMPLETED:
        raise RuntimeError(f"{mode} run ended {state['status']}")
    done = state["stats"]["processed_files"] + state["stats"]["skipped_duplicates"]
    return {
        "mode": mode,
        "seconds": round(seconds, 3),
        "files": state["total_files"],
        "files_per_s": round(done / seconds, 2),
        "errors": state["stats"]["errors"],
        "skipped_duplicates": state["stats"]["skipped_duplicates"],
        "workers": registry.workers,
        "events": len(delays),
        "median_publish_delay_ms": round(statistics.median(delays) * 1000, 3),
        "p95_publish_delay_ms": round(sorted(delays)[int(0.95 * (len(delays) - 1))] * 1000, 3),
        **lag,
    }


def summarize(runs: list[dict[str, Any]], mode: str, workers: int) -> dict[str, Any]:
    """Medians over the measured runs of one mode and pool size (the max lag: the median and the worst)."""
    mine = [r for r in runs if r["mode"] == mode and r["workers"] == workers]
    rates = [r["files_per_s"] for r in mine]
    return {
        "mode": mode,
        "workers": workers,
        "runs": len(mine),
        "files": mine[0]["files"],
        "errors": mine[0]["errors"],
        "median_s": round(statistics.median(r["seconds"] for r in mine), 3),
        "median_files_per_s": round(statistics.median(rates), 2),
        "min_files_per_s": min(rates),
        "max_files_per_s": max(rates),
        "median_max_lag_ms": round(statistics.median(r["max_lag_ms"] for r in mine), 2),
        "median_publish_delay_ms": round(statistics.median(r["median_publish_delay_ms"] for r in mine), 3),
        "median_p95_publish_delay_ms": round(statistics.median(r["p95_publish_delay_ms"] for r in mine), 3),
        "worst_max_lag_ms": max(r["max_lag_ms"] for r in mine),
    }


def markdown(summary: list[dict[str, Any]]) -> str:
    smallest = min(s["workers"] for s in summary)
    base = {s["mode"]: s["median_files_per_s"] for s in summary if s["workers"] == smallest}
    lines = [
        f"| mode | processes | files | runs | median s | median files/s | min-max files/s | vs {smallest} "
        "| max hub lag ms (median / worst run) | publish delay ms (median / p95) | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['mode']} | {s['workers']} | {s['files']} | {s['runs']} | {s['median_s']:.3f} "
            f"| {s['median_files_per_s']:.1f} | {s['min_files_per_s']:.1f}-{s['max_files_per_s']:.1f} "
            f"| {s['median_files_per_s'] / base[s['mode']]:.2f}x "
            f"| {s['median_max_lag_ms']:.1f} / {s['worst_max_lag_ms']:.1f} "
            f"| {s['median_publish_delay_ms']:.2f} / {s['median_p95_publish_delay_ms']:.2f} | {s['errors']} |"
        )
    return "\n".join(lines)


def corpus(arg: Path | None, tmp: Path) -> Path:
    """The directory to ingest: the argument, else the shared corpus, else generated samples."""
    if arg is not None:
        return arg.resolve()
    if CORPUS.is_dir():
        return CORPUS
    from ingestapp.cli.samples import write_samples

    write_samples(tmp / "samples")
    return tmp / "samples"


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, nargs="?", help=f"media directory (default {CORPUS})")
    parser.add_argument("--repeat", type=int, default=5, help="measured runs per mode (median reported)")
    parser.add_argument("--pool-sizes", default="1,2", help="worker process counts (comma-separated)")
    parser.add_argument("--modes", default=",".join(MODES), help="modes to run (comma-separated)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for the JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(size) for size in args.pool_sizes.split(",")]
    modes = args.modes.split(",")
    load_before = os.getloadavg()
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="pipeline-samples-") as tmp:
        directory = corpus(args.directory, Path(tmp))
        cases = [(size, mode) for size in sizes for mode in modes]
        warm_up = [run_once(directory, mode, size) for size, mode in cases]
        runs = []
        for i in range(args.repeat):
            for size, mode in cases:  # interleaved, so a change in the machine's load hits every case
                runs.append(run_once(directory, mode, size))
                print(f"run {i + 1}/{args.repeat}: {json.dumps(runs[-1])}", flush=True)
    close_all()
    summary = [summarize(runs, mode, size) for mode in modes for size in sizes]
    report = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "directory": str(directory),
        "modes": {mode: MODES[mode] for mode in modes},
        "pool_sizes": sizes,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "warm_up": warm_up,
        "runs": runs,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pipeline-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(markdown(summary))
    print(f"\nwarm-up runs (not counted): {json.dumps(warm_up)}")
    print(f"1-minute load average: {load_before[0]:.2f} before, {report['load_average']['after'][0]:.2f} after")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
