"""SSE fan-out benchmark: K live streams on one gunicorn gevent worker, against 1-second polling.

For every K in ``--clients`` a fresh gunicorn (``gunicorn.conf.py`` as shipped: gevent, one worker)
serves a temporary instance and media root. The bench then

1. measures the worker's RSS, opens K SSE streams on a session that has not started yet, waits
   until ``/api/ingest/metrics`` shows K open streams and measures the RSS again (RSS per stream);
2. starts a second, running job, opens 1,000 extra streams on it, closes them client-side and
   times how long the server takes to drop back to K open streams (release time);
3. starts the measured job (N small JPEGs, metadata pipeline, NSFW off) and records, for every
   event every client receives, ``receive time - emitted_at``; then checks that every client got
   every ``file`` event exactly once and in order, against the replayed event log.

The polling baseline runs the identical job with K keep-alive HTTP/1.1 pollers hitting
``/api/ingest/status/<id>`` once a second (evenly phased); the latency of file n is the time a
poller first sees ``processed_files >= n`` minus ``emitted_at`` of file n (taken from one SSE
observer).

"A session that has not started yet": ``POST /api/ingest/process`` starts its job at once, so a
throwaway server with a one-hour per-file delay creates the session and is stopped right after
the scan. The session is then ``interrupted`` with no file done; each measured server gets a copy
of that database, and ``POST /api/ingest/<id>/resume`` starts the real ingest of all N files once
the streams are open.

With ``--workers N``, the bench measures scale-out instead: a real redis-server (the event bus)
and PostgreSQL (the shared store) start from ``tests/services.py``, the pending session is made on
PostgreSQL, and for every K a gunicorn with ``WEB_CONCURRENCY=N`` on a copy of that database serves
K streams spread over its workers; the job's latency and completeness are measured as above
(``open_streams`` is then the sum over the workers, from ``GET /metrics``). ``--workers 1`` runs the
same stack with one worker, the figures to compare against.

With ``--work-tier W`` as well (issue 10), every K also gets W ``flask --app ingestapp worker
--concurrency C`` processes (``--work-tier-concurrency``) on the same database, media root and
thumbnail directory; the bench waits for their heartbeats, so the resumed session is queued for
them and runs there while the web tier only fans out. ``--work-tier-cpus 1`` pins the work tier to
CPU 1, and gunicorn and the clients to the other CPUs (two hosts, as far as one machine allows).
``--file-delay`` (default 0 with ``--work-tier``, else 0.02 s) is the measured servers' and
workers' ``INGEST_FILE_DELAY``: 0 measures the maximum rate. K may be 0 (no viewer: only the job's
rate). The job's rate is taken from the server's own clock: files / (last ``file`` event's
``emitted_at`` minus the resume request), so the time to deliver the last events to every viewer
is not in it; each K's rate is also given as a ratio to the K=0 rate of the same run (issue 10's
targets: at least 0.8 at 1,000 viewers, 0.5 at 10,000).

"Viewers during a real ingest" (``--ingest-viewers K``, issue 10): K streams watch a full-pipeline
ingest (``--ingest-files`` noisy 1600x1200 JPEGs; metadata, keywords, scores, NSFW on; no file
delay), then K streams watch "the same fan-out with no ingest": as many tiny JPEGs, metadata only,
with the per-file delay that gives the rate the real ingest reached. The ratios of their p50 and
p99 latencies are the cost the ingest work puts on the streams.

Last, a fresh server holds ``--floor-connections`` bare connections (no request sent): the RSS
gunicorn's gevent worker spends per connection before the app is involved, the floor under any
per-stream figure.

The clients are asyncio streams speaking HTTP/1.1 by hand (chunked decoding included), all in
this process, which shares the machine's cores with the server. Only loopback addresses are used;
every wait is bounded. Results go to ``bench/results/stream-<timestamp>.json`` and a Markdown table
is printed.

    .venv/bin/python bench/stream_bench.py --clients 10,100,1000,10000 --files 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingestapp.core.vocabulary import FINISHED_STATUSES, TERMINAL_EVENTS, SessionStatus, StageName, StageStatus  # noqa: E402
from tests.factories import write_jpegs  # noqa: E402
from tests.servers import TOKENS, Server, gunicorn  # noqa: E402

HOST = "127.0.0.1"
#: Seconds each file waits before its stages run, and the threadpool size: with 2 workers this is
#: ~90 files/s (~200 events/s: one ``file`` and one ``progress`` event per file) on an idle server.
FILE_DELAY = "0.02"
WORKERS = "2"
RELEASE_STREAMS = 1000
RELEASE_FILES = 2000  # the running job the 1,000 extra streams watch: ~20 s at full speed
TERMINAL_EVENT_BYTES = tuple(event.encode() for event in TERMINAL_EVENTS)
CONNECT_CONCURRENCY = 500  # handshakes in flight at once (gunicorn's listen backlog is 2048)
IO_TIMEOUT = 30.0  # one connect, request or response
METADATA_ONLY = {
    "extract_metadata": True,
    "extract_keywords": False,
    "import_scores": False,
    "enable_nsfw_detection": False,
    "skip_duplicates": False,
}
FULL_PIPELINE = {
    "extract_metadata": True,
    "extract_keywords": True,
    "import_scores": True,
    "enable_nsfw_detection": True,
    "skip_duplicates": False,
}
PHOTO_SIZE = (1600, 1200)  # the "real ingest" photos
TARGETS = {"p99_ms": {100: 10.0, 1000: 50.0}, "rss_kb_at_10000": 16.0, "release_ms": 1000.0,
           "ingest_vs_fanout": {"p50": 1.2, "p99": 1.5}}


# -- HTTP/1.1 by hand -------------------------------------------------------------------------------


class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoder; ``done`` after the last chunk."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Add received bytes; return the payload of every chunk now complete."""
        self.raw += data
        out = bytearray()
        pos = 0
        while not self.done:
            end = self.raw.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(bytes(self.raw[pos:end]).split(b";")[0], 16)
            if size == 0:
                self.done = True
                break
            start = end + 2
            if len(self.raw) < start + size + 2:
                break
            out += self.raw[start : start + size]
            pos = start + size + 2
        del self.raw[:pos]
        return bytes(out)


def request_bytes(port: int, method: str, path: str, body: Any = None, keep_alive: bool = False) -> bytes:
    """An HTTP/1.1 request to the server on ``port``, with its test admin's API token (RFC 6750); a
    JSON body when ``body`` is not None."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Accept: */*", f"Authorization: Bearer {TOKENS[port]}"]
    payload = b""
    if body is not None:
        payload = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and lower-cased headers of a response."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One whole (finite) response: Content-Length, chunked, or read to EOF."""
    status, headers = await read_head(reader)
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), IO_TIMEOUT)
    elif headers.get("transfer-encoding") == "chunked":
        decoder, parts = ChunkedDecoder(), []
        while not decoder.done:
            data = await asyncio.wait_for(reader.read(65536), IO_TIMEOUT)
            if not data:
                break
            parts.append(decoder.feed(data))
        body = b"".join(parts)
    else:
        body = await asyncio.wait_for(reader.read(), IO_TIMEOUT)
    return status, headers, body


async def http_json(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request on a fresh connection; returns (status, parsed JSON or None)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
    try:
        writer.write(request_bytes(port, method, path, body))
        status, _, data = await read_response(reader)
    finally:
        writer.close()
    return status, json.loads(data) if data else None


#: Set in ``--workers`` mode: the per-worker JSON metrics would count one worker's streams only.
SUMMED_METRICS = False


async def metrics(port: int) -> dict[str, Any]:
    if SUMMED_METRICS:
        return {"open_streams": await summed_open_streams(port)}
    return (await http_json(port, "GET", "/api/ingest/metrics"))[1]


async def summed_open_streams(port: int) -> int:
    """``ingest_open_streams`` from ``GET /metrics`` (prometheus_client sums the live workers)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
    try:
        writer.write(request_bytes(port, "GET", "/metrics"))
        _, _, data = await read_response(reader)
    finally:
        writer.close()
    for line in data.decode().splitlines():
        if line.startswith("ingest_open_streams "):
            return int(float(line.split()[1]))
    return 0


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05) -> float:
    """Poll ``check`` until it is true; return the seconds it took. Raises TimeoutError."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic() - started


# -- the SSE client -----------------------------------------------------------------------------------


EMITTED_AT = b'"emitted_at":'


@dataclass(slots=True)
class StreamClient:
    """One SSE client: what it received, checked as it arrives (kept small for 10,000 of them).

    Attributes:
        latencies: seconds from ``emitted_at`` to the read that delivered the event, every event.
        file_seqs: ``seq`` of each ``file`` event, in arrival order.
        file_emitted: ``emitted_at`` of each ``file`` event (only when ``keep_emitted``).
    """

    keep_emitted: bool = False
    status: int = 0
    snapshot: bool = False
    terminal: str | None = None
    error: str | None = None
    last_seq: int = 0
    disorder: int = 0
    latencies: array = field(default_factory=lambda: array("d"))
    file_seqs: array = field(default_factory=lambda: array("q"))
    file_emitted: array = field(default_factory=lambda: array("d"))
    writer: asyncio.StreamWriter | None = None

    def on_frame(self, frame: bytes, now: float) -> None:
        """Handle one SSE frame (without its blank line) read at ``now`` (Unix seconds)."""
        if not frame.startswith(b"id: "):
            return  # the retry field or a keepalive comment
        first = frame.index(b"\n")
        second = frame.index(b"\n", first + 1)
        seq = int(frame[4:first])
        kind = frame[first + 8 : second]
        if kind == b"snapshot":
            self.snapshot, self.last_seq = True, seq
            return
        if seq <= self.last_seq:
            self.disorder += 1
        self.last_seq = seq
        start = frame.index(EMITTED_AT, second) + len(EMITTED_AT)
        emitted = float(frame[start : frame.index(b",", start)])
        self.latencies.append(now - emitted)
        if kind == b"file":
            self.file_seqs.append(seq)
            if self.keep_emitted:
                self.file_emitted.append(emitted)
        elif kind in TERMINAL_EVENT_BYTES:
            self.terminal = kind.decode()


async def open_stream(client: StreamClient, port: int, path: str, gate: asyncio.Semaphore) -> asyncio.StreamReader:
    """Connect, send the request and read up to the snapshot (``gate`` bounds concurrent handshakes)."""
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
        client.writer = writer
        writer.write(request_bytes(port, "GET", path, keep_alive=True))
        client.status, headers = await read_head(reader)
        if client.status != 200 or headers.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"stream answered {client.status} {headers}")
        return reader


async def run_stream(client: StreamClient, port: int, path: str, gate: asyncio.Semaphore) -> None:
    """Read one SSE response until the server ends it; record failures in ``client.error``."""
    try:
        reader = await open_stream(client, port, path, gate)
        decoder, pending = ChunkedDecoder(), b""
        while not decoder.done:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("EOF before the end of the response")
            now = time.time()
            pending += decoder.feed(data)
            *frames, pending = pending.split(b"\n\n")
            for frame in frames:
                client.on_frame(frame, now)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        client.error = f"{type(exc).__name__}: {exc}"
    finally:
        if client.writer is not None:
            client.writer.close()


@dataclass
class StreamGroup:
    """K clients on one session, each reading in its own task."""

    clients: list[StreamClient]
    tasks: list[asyncio.Task]

    @classmethod
    def start(cls, port: int, path: str, count: int, keep_emitted: bool = False) -> StreamGroup:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        clients = [StreamClient(keep_emitted) for _ in range(count)]
        tasks = [asyncio.create_task(run_stream(c, port, path, gate)) for c in clients]
        return cls(clients, tasks)

    def snapshots(self) -> int:
        return sum(c.snapshot for c in self.clients)

    def failed(self) -> list[str]:
        return [c.error for c in self.clients if c.error]

    async def wait_open(self, port: int, expected_streams: int, timeout: float) -> float:
        """Wait until every client has its snapshot and the server counts ``expected_streams``."""

        async def ready() -> bool:
            if self.failed():
                raise RuntimeError(f"{len(self.failed())} streams failed: {self.failed()[0]}")
            return self.snapshots() == len(self.clients) and (await metrics(port))["open_streams"] == expected_streams

        return await wait_until(ready, timeout, interval=0.1)

    async def finish(self, timeout: float) -> bool:
        """Wait for every response to end; cancel the stragglers. True when all ended in time."""
        _, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return not pending

    async def close(self) -> None:
        """Disconnect every client (FIN), as a browser closing its tab would."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- the polling client --------------------------------------------------------------------------------


@dataclass(slots=True)
class Poller:
    """A keep-alive client polling the status endpoint every ``period`` seconds from ``phase``."""

    seen: list[tuple[float, int]] = field(default_factory=list)  # (receive time, processed_files)
    requests: int = 0
    error: str | None = None
    ended: float = 0.0  # time.monotonic() of the last response

    async def run(self, port: int, path: str, phase: float, period: float, deadline: float) -> None:
        reader = writer = None
        next_at = time.monotonic() + phase
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += period
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
                writer.write(request_bytes(port, "GET", path, keep_alive=True))
                _, headers, body = await read_response(reader)
                self.requests += 1
                self.ended = time.monotonic()
                state = json.loads(body)
                self.seen.append((time.time(), state["processed_files"]))
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    writer = None
                if state["status"] in FINISHED_STATUSES:
                    return
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if writer is not None:
                writer.close()

    def latencies(self, emitted: list[float]) -> list[float]:
        """For file n: the first time this poller saw ``processed_files >= n`` minus its emitted_at."""
        out, i = [], 0
        for n, emitted_at in enumerate(emitted, start=1):
            while i < len(self.seen) and self.seen[i][1] < n:
                i += 1
            if i == len(self.seen):
                break
            out.append(self.seen[i][0] - emitted_at)
        return out


# -- servers, corpus, the pending session ------------------------------------------------------------------


@dataclass
class Bench:
    """Everything the cases share: the temp tree, corpus, the pending session and the options."""

    root: Path
    media: Path
    photos: Path
    slow: Path
    template: Path
    session_id: str
    files: int
    job_timeout: float
    delay: str = FILE_DELAY  # INGEST_FILE_DELAY of the measured servers


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (gunicorn inherits it); return (soft, hard)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


#: ``REDIS_URL``/``DATABASE_URL`` in ``--workers`` mode.
SHARED_ENV: dict[str, str] = {}


def server_env(delay: str = FILE_DELAY) -> dict[str, str]:
    # Every stream is the bench admin's: lift the per-user share of streams (default 50).
    return {"INGEST_FILE_DELAY": delay, "INGEST_WORKERS": WORKERS, "INGEST_MAX_STREAMS_PER_USER": "1000000",
            **SHARED_ENV}


def worker_of(server: Server) -> psutil.Process:
    """The gevent worker: the only child of the gunicorn master."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = psutil.Process(server.process.pid).children()
        if len(children) == 1:
            return children[0]
        time.sleep(0.1)
    raise RuntimeError("no single gunicorn worker found")


def make_pending_session(
    root: Path, media: Path, photos: Path, files: int, pipeline: dict[str, bool] = METADATA_ONLY,
    name: str = "template",
) -> tuple[Path, str]:
    """An ``interrupted`` session over ``photos`` with no file done, in a template instance dir."""
    template = root / name
    with gunicorn(template, media, server_env(delay="3600")) as server:
        body = {"parameters": {**parameters(photos), **pipeline}}
        status, body = server.request("POST", "/api/ingest/process", body)
        if status != 202:
            raise RuntimeError(f"process answered {status}: {body}")
        session_id = body["session_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = server.request("GET", f"/api/ingest/status/{session_id}")[1]
            if state["stages"][StageName.SCANNING]["status"] == StageStatus.COMPLETED and state["total_files"] == files:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError("the template session never finished scanning")
    for log in template.glob("gunicorn-*.log"):
        log.unlink()
    return template, session_id


def parameters(directory: Path) -> dict[str, Any]:
    return {"directory": str(directory), **METADATA_ONLY}


def prepare(root: Path, files: int, job_timeout: float) -> Bench:
    """Write the corpus and the pending session."""
    media = root / "media"
    photos, slow = media / "photos", media / "slow"
    write_jpegs(photos, files)
    write_jpegs(slow, RELEASE_FILES, prefix="slow")
    template, session_id = make_pending_session(root, media, photos, files)
    return Bench(root, media, photos, slow, template, session_id, files, job_timeout)


@contextmanager
def fresh_server(bench: Bench, name: str):
    """A new gunicorn on a copy of the template instance (so the pending session is unstarted)."""
    instance = bench.root / name
    shutil.copytree(bench.template, instance)
    with gunicorn(instance, bench.media, server_env(bench.delay)) as server:
        yield server


async def warm_up(server: Server, session_id: str) -> None:
    """First requests (imports, first stream) before the RSS baseline is taken."""
    for _ in range(3):
        await http_json(server.port, "GET", f"/api/ingest/status/{session_id}")
        await metrics(server.port)
    group = StreamGroup.start(server.port, f"/api/ingest/stream/{session_id}", 1)
    await group.wait_open(server.port, 1, IO_TIMEOUT)
    await group.close()
    await wait_until(lambda: no_streams(server.port), IO_TIMEOUT)
    await asyncio.sleep(0.5)


async def no_streams(port: int) -> bool:
    return (await metrics(port))["open_streams"] == 0


async def status_of(port: int, session_id: str) -> dict[str, Any]:
    return (await http_json(port, "GET", f"/api/ingest/status/{session_id}"))[1]


async def wait_status(port: int, session_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    box: dict[str, Any] = {}

    async def reached() -> bool:
        box["state"] = await status_of(port, session_id)
        return box["state"]["status"] in statuses

    await wait_until(reached, timeout, interval=0.1)
    return box["state"]


async def resume(port: int, session_id: str) -> None:
    status, body = await http_json(port, "POST", f"/api/ingest/{session_id}/resume", {})
    if status != 202:
        raise RuntimeError(f"resume answered {status}: {body}")


# -- measurements ------------------------------------------------------------------------------------------


def percentiles_ms(seconds: np.ndarray) -> dict[str, float | int | None]:
    """p50/p90/p99/max in ms (and the sample count)."""
    if seconds.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None, "count": 0}
    p50, p90, p99 = np.percentile(seconds, [50, 90, 99]) * 1000
    return {
        "p50": round(float(p50), 2),
        "p90": round(float(p90), 2),
        "p99": round(float(p99), 2),
        "max": round(float(seconds.max()) * 1000, 2),
        "count": int(seconds.size),
    }


async def release_time(server: Server, bench: Bench, baseline: int) -> dict[str, Any]:
    """Open 1,000 streams on a running job, close them client-side, time the drop back to ``baseline``."""
    status, body = await http_json(server.port, "POST", "/api/ingest/process", {"parameters": parameters(bench.slow)})
    if status != 202:
        raise RuntimeError(f"process answered {status}: {body}")
    session_id = body["session_id"]
    await wait_status(server.port, session_id, {SessionStatus.PROCESSING}, IO_TIMEOUT)
    group = StreamGroup.start(server.port, f"/api/ingest/stream/{session_id}", RELEASE_STREAMS)
    await group.wait_open(server.port, baseline + RELEASE_STREAMS, 120)
    received = sum(len(c.latencies) for c in group.clients)
    closing = time.monotonic()
    await group.close()
    await asyncio.sleep(0)  # the transports close their sockets on the next loop iteration
    closed_at = time.monotonic()
    await wait_until(lambda: streams_at(server.port, baseline), 30, interval=0.005)
    released_ms = (time.monotonic() - closed_at) * 1000
    state = await status_of(server.port, session_id)
    await http_json(server.port, "POST", f"/api/ingest/{session_id}/cancel", {})
    await wait_status(server.port, session_id, {SessionStatus.CANCELLED, SessionStatus.COMPLETED}, 60)
    return {
        "release_ms": round(released_ms, 1),
        "close_ms": round((closed_at - closing) * 1000, 1),
        "job_status_after_release": state["status"],
        "events_received_before_close": received,
    }


async def streams_at(port: int, count: int) -> bool:
    return (await metrics(port))["open_streams"] == count


def completeness(clients: list[StreamClient], expected: array, files: int) -> dict[str, Any]:
    """Every client got exactly the file events of the log, once each, in order."""
    exact = sum(c.file_seqs == expected for c in clients)
    return {
        "expected_file_events": len(expected),
        "files": files,
        "clients_complete": exact,
        "clients": len(clients),
        "complete": exact == len(clients) and len(expected) == files,
        "clients_with_disorder": sum(c.disorder > 0 for c in clients),
        "clients_failed": sum(c.error is not None for c in clients),
        "clients_without_terminal": sum(c.terminal is None for c in clients),
        "first_error": next((c.error for c in clients if c.error), None),
    }


async def logged_file_seqs(port: int, session_id: str) -> array:
    """The ``file`` events of the session as the server persisted them (a full replay)."""
    return (await replay(port, session_id)).file_seqs


async def replay(port: int, session_id: str) -> StreamClient:
    """One client that read the session's whole event log (``file_emitted`` kept)."""
    group = StreamGroup.start(port, f"/api/ingest/stream/{session_id}?last_event_id=0", 1, keep_emitted=True)
    await group.finish(120)
    return group.clients[0]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class CpuMeter:
    """CPU seconds (user + system) the server worker and this client process use from now on."""

    def __init__(self, worker: psutil.Process) -> None:
        self.worker, self.me = worker, psutil.Process()
        self.server0, self.client0 = cpu_seconds(self.worker), cpu_seconds(self.me)

    def used(self) -> dict[str, float]:
        return {
            "server_cpu_s": round(cpu_seconds(self.worker) - self.server0, 2),
            "client_cpu_s": round(cpu_seconds(self.me) - self.client0, 2),
        }


async def greenlet_count(port: int) -> int:
    return (await http_json(port, "GET", "/api/ingest/metrics?greenlets=1"))[1]["greenlets"]


async def open_idle_streams(server: Server, bench: Bench, k: int) -> tuple[StreamGroup, dict[str, Any]]:
    """Open K streams on the pending session; RSS and greenlets per idle stream."""
    worker = worker_of(server)
    greenlets_before, rss_before = await greenlet_count(server.port), worker.memory_info().rss
    group = StreamGroup.start(server.port, f"/api/ingest/stream/{bench.session_id}", k)
    open_s = await group.wait_open(server.port, k, 60 + k / 50)
    await asyncio.sleep(1.0)
    rss_idle, greenlets = worker.memory_info().rss, await greenlet_count(server.port)
    print(f"  K={k}: {k} streams open in {open_s:.1f} s", flush=True)
    return group, {
        "open_s": round(open_s, 2),
        "rss_before_kb": rss_before // 1024,
        "rss_idle_kb": rss_idle // 1024,
        "rss_per_stream_kb": round((rss_idle - rss_before) / 1024 / k, 2),
        "greenlets_per_stream": round((greenlets - greenlets_before) / k, 2),
    }


async def measure_job(server: Server, bench: Bench, group: StreamGroup) -> dict[str, Any]:
    """Start the pending session's job; latency and completeness over the group's clients."""
    before = await metrics(server.port)
    meter, t0 = CpuMeter(worker_of(server)), time.monotonic()
    await resume(server.port, bench.session_id)
    finished = await group.finish(bench.job_timeout)
    job_s = time.monotonic() - t0
    cpu = meter.used()
    after = await metrics(server.port)
    expected = await logged_file_seqs(server.port, bench.session_id)
    latencies = np.concatenate([np.frombuffer(c.latencies, dtype=np.float64) for c in group.clients])
    emitted = after["events_emitted"] - before["events_emitted"]
    return {
        "latency_ms": percentiles_ms(latencies),
        "completeness": completeness(group.clients, expected, bench.files),
        "finished_in_time": finished,
        "job_s": round(job_s, 2),
        "events_emitted": emitted,
        "events_per_s": round(emitted / job_s, 1),
        "files_per_s": round(bench.files / job_s, 1),
        **cpu,
        "metrics_delta": {n: after[n] - before[n] for n in ("events_delivered", "events_conflated", "events_replayed")},
    }


async def stream_case(server: Server, bench: Bench, k: int) -> dict[str, Any]:
    """One K: RSS per idle stream, release time (with the K streams open), then the measured job."""
    await warm_up(server, bench.session_id)
    group, idle = await open_idle_streams(server, bench, k)
    release = await release_time(server, bench, k)
    print(f"  K={k}: released {RELEASE_STREAMS} streams in {release['release_ms']} ms", flush=True)
    job = await measure_job(server, bench, group)
    return {"mode": "sse", "clients": k, "files": bench.files, **idle, **job, **release}


async def viewers_case(server: Server, bench: Bench, k: int) -> dict[str, Any]:
    """K streams open on the pending session, then its job: latency, completeness, rate."""
    await warm_up(server, bench.session_id)
    group = StreamGroup.start(server.port, f"/api/ingest/stream/{bench.session_id}", k)
    await group.wait_open(server.port, k, 60 + k / 50)
    await asyncio.sleep(1.0)
    job = await measure_job(server, bench, group)
    await group.close()
    return {"clients": k, "files": bench.files, "file_delay": bench.delay, **job}


def write_photos(directory: Path, count: int) -> None:
    """``count`` distinct noisy JPEGs of PHOTO_SIZE (noise, so decoding and hashing cost what a photo does)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(10)
    width, height = PHOTO_SIZE
    ramp = np.linspace(20, 200, width, dtype=np.float32)[None, :, None]
    for i in range(count):
        noise = rng.integers(0, 50, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        pixels = np.clip(ramp + noise + (i % 40), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(directory / f"photo_{i:04d}.jpg", quality=90)


def viewers_benches(bench: Bench, files: int) -> tuple[Bench, Bench]:
    """The real-ingest bench (full pipeline, no delay) and the no-ingest bench (tiny files, metadata
    only; its delay is set once the real ingest's rate is known)."""
    real_photos, tiny = bench.media / "real", bench.media / "tiny"
    write_photos(real_photos, files)
    write_jpegs(tiny, files, prefix="tiny")
    template, session_id = make_pending_session(bench.root, bench.media, real_photos, files, FULL_PIPELINE, "real")
    real = Bench(bench.root, bench.media, real_photos, bench.slow, template, session_id, files, bench.job_timeout, "0")
    template, session_id = make_pending_session(bench.root, bench.media, tiny, files, METADATA_ONLY, "tiny")
    fanout = Bench(bench.root, bench.media, tiny, bench.slow, template, session_id, files, bench.job_timeout)
    return real, fanout


async def poll_case(server: Server, bench: Bench, k: int) -> dict[str, Any]:
    """One K of the 1-second polling baseline, with one SSE observer for ``emitted_at``."""
    await warm_up(server, bench.session_id)
    observer = StreamGroup.start(server.port, f"/api/ingest/stream/{bench.session_id}", 1, keep_emitted=True)
    await observer.wait_open(server.port, 1, IO_TIMEOUT)
    deadline = time.monotonic() + bench.job_timeout
    pollers = [Poller() for _ in range(k)]
    path = f"/api/ingest/status/{bench.session_id}"
    tasks = [asyncio.create_task(p.run(server.port, path, i / k, 1.0, deadline)) for i, p in enumerate(pollers)]
    await asyncio.sleep(1.2)  # every poller is polling before the job starts
    counted = sum(p.requests for p in pollers)
    meter, t0 = CpuMeter(worker_of(server)), time.monotonic()
    await resume(server.port, bench.session_id)
    finished = await observer.finish(bench.job_timeout)
    job_s = time.monotonic() - t0
    await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
    emitted = list(observer.clients[0].file_emitted)
    per_poller = [p.latencies(emitted) for p in pollers]
    latencies = np.array([x for lat in per_poller for x in lat])
    requests = sum(p.requests for p in pollers) - counted
    window = max(p.ended for p in pollers) - t0
    cpu = meter.used()
    return {
        "mode": "poll",
        "clients": k,
        "files": bench.files,
        "latency_ms": percentiles_ms(latencies),
        "pollers_complete": sum(len(lat) == bench.files for lat in per_poller),
        "pollers_failed": sum(p.error is not None for p in pollers),
        "first_error": next((p.error for p in pollers if p.error), None),
        "finished_in_time": finished,
        "job_s": round(job_s, 2),
        "files_per_s": round(bench.files / job_s, 1),
        "requests": requests,
        "requests_per_s": round(requests / window, 1),
        "polling_window_s": round(window, 2),
        **cpu,
    }


async def floor_case(server: Server, bench: Bench, k: int) -> dict[str, Any]:
    """RSS of K bare connections (no request sent): gunicorn's own cost per connection."""
    worker = worker_of(server)
    await warm_up(server, bench.session_id)
    greenlets_before, rss_before = await greenlet_count(server.port), worker.memory_info().rss
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> asyncio.StreamWriter:
        async with gate:
            return (await asyncio.wait_for(asyncio.open_connection(HOST, port=server.port), IO_TIMEOUT))[1]

    writers = await asyncio.gather(*(connect() for _ in range(k)))
    await asyncio.sleep(2.0)  # let the server accept every connection
    rss, greenlets = worker.memory_info().rss, await greenlet_count(server.port)
    for writer in writers:
        writer.close()
    return {
        "mode": "bare-connection",
        "clients": k,
        "rss_per_connection_kb": round((rss - rss_before) / 1024 / k, 2),
        "greenlets_per_connection": round((greenlets - greenlets_before) / k, 2),
    }


# -- report ----------------------------------------------------------------------------------------------------


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it was met."""
    sse = {r["clients"]: r for r in results if r["mode"] == "sse"}
    out = []
    for k, limit in TARGETS["p99_ms"].items():
        if k in sse:
            value = sse[k]["latency_ms"]["p99"]
            out.append({"target": f"p99 <= {limit:g} ms at {k} streams", "value": value,
                        "met": value is not None and value <= limit})
    if 10000 in sse:
        r = sse[10000]
        out.append({"target": "10,000 streams <= 16 KB each", "value": r["rss_per_stream_kb"],
                    "met": r["rss_per_stream_kb"] <= TARGETS["rss_kb_at_10000"]})
        out.append({"target": "10,000 streams: every file event delivered", "value": r["completeness"]["complete"],
                    "met": r["completeness"]["complete"]})
    for k, r in sse.items():
        out.append({"target": f"release 1,000 streams <= 1 s (K={k})", "value": r["release_ms"],
                    "met": r["release_ms"] <= TARGETS["release_ms"]})
    ingest = next((r for r in results if r["mode"] == "ingest"), None)
    fanout = next((r for r in results if r["mode"] == "fanout"), None)
    if ingest and fanout:
        for p, limit in TARGETS["ingest_vs_fanout"].items():
            ratio = round(ingest["latency_ms"][p] / fanout["latency_ms"][p], 2)
            out.append({"target": f"{p} during a real ingest <= {limit}x the same fan-out without "
                                  f"(K={ingest['clients']})", "value": ratio, "met": ratio <= limit})
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def latency_row(r: dict[str, Any]) -> str:
    """One row of the latency table (an SSE or a polling case)."""
    lat = r["latency_ms"]
    if r["mode"] != "poll":
        c = r["completeness"]
        complete = f"{'yes' if c['complete'] else 'NO'} ({c['clients_complete']:,}/{c['clients']:,})"
        requests, events = r["clients"], fmt(r["events_per_s"])
    else:
        complete = f"{r['pollers_complete']:,}/{r['clients']:,} saw every n"
        requests, events = r["requests"], "-"
    cells = [r["mode"], fmt(r["clients"]), fmt(requests), *(fmt(lat[p]) for p in ("p50", "p90", "p99", "max")),
             complete, fmt(r["job_s"]), fmt(r["files_per_s"]), events, fmt(r["server_cpu_s"]), fmt(r["client_cpu_s"])]
    return "| " + " | ".join(cells) + " |"


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as Markdown tables: latency, SSE resources, targets."""
    lines = [
        "| mode | clients | requests | p50 ms | p90 ms | p99 ms | max ms | complete | job s | files/s | events/s "
        "| server CPU s | client CPU s |",
        "|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|",
        *(latency_row(r) for r in results if r["mode"] in ("sse", "poll", "ingest", "fanout")),
        "",
        "| held by the worker | count | RSS KB each | greenlets each | open s | release 1,000 ms |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r["mode"] == "sse":
            lines.append(f"| idle SSE streams | {r['clients']:,} | {fmt(r['rss_per_stream_kb'])} "
                         f"| {fmt(r['greenlets_per_stream'])} | {fmt(r['open_s'])} | {fmt(r['release_ms'])} |")
        elif r["mode"] == "bare-connection":
            lines.append(f"| bare connections (no request) | {r['clients']:,} | {fmt(r['rss_per_connection_kb'])} "
                         f"| {fmt(r['greenlets_per_connection'])} | - | - |")
    lines += ["", "| target | measured | met |", "|---|--:|---|"]
    lines += [f"| {t['target']} | {fmt(t['value'])} | {'yes' if t['met'] else 'NO'} |" for t in targets(results)]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- scale-out: --workers N -------------------------------------------------------------------------------------


async def scaled_case(server: Server, bench: Bench, k: int, workers: int, tier: list[Any]) -> dict[str, Any]:
    """K streams over the workers, then the measured job (run by the ``tier`` worker processes when
    given): the job's rate, latency, completeness, spread, CPU."""
    processes = psutil.Process(server.process.pid).children()
    tier_processes = processes_of(tier)
    group = StreamGroup.start(server.port, f"/api/ingest/stream/{bench.session_id}", k)
    open_s = await group.wait_open(server.port, k, 60 + k / 50)
    spread = sorted((sum(1 for c in p.net_connections(kind="tcp") if c.laddr and c.laddr.port == server.port
                         and c.status == psutil.CONN_ESTABLISHED) for p in processes), reverse=True)
    print(f"  K={k}: {k} streams open in {open_s:.1f} s over {workers} workers {spread}", flush=True)
    cpu0, tier0 = sum(cpu_seconds(p) for p in processes), sum(cpu_seconds(p) for p in tier_processes)
    me0, t0, resumed_at = cpu_seconds(psutil.Process()), time.monotonic(), time.time()
    await resume(server.port, bench.session_id)
    if k:
        finished = await group.finish(bench.job_timeout)
    else:
        await wait_status(server.port, bench.session_id, set(FINISHED_STATUSES), bench.job_timeout)
        finished = True
    job_s = time.monotonic() - t0
    server_cpu = sum(cpu_seconds(p) for p in processes) - cpu0
    tier_cpu = sum(cpu_seconds(p) for p in tier_processes) - tier0
    client_cpu = cpu_seconds(psutil.Process()) - me0
    log = await replay(server.port, bench.session_id)
    ingest_s = max(log.file_emitted) - resumed_at if log.file_emitted else None
    latencies = np.concatenate([np.frombuffer(c.latencies, dtype=np.float64) for c in group.clients] or [[]])
    return {
        "mode": "sse-scaled", "workers": workers, "work_tier": len(tier), "clients": k, "files": bench.files,
        "file_delay": bench.delay, "open_s": round(open_s, 2), "streams_per_worker": spread,
        "latency_ms": percentiles_ms(latencies),
        "completeness": completeness(group.clients, log.file_seqs, bench.files) if k else None,
        "finished_in_time": finished, "job_status": (await status_of(server.port, bench.session_id))["status"],
        "logged_file_events": len(log.file_seqs), "items_by_worker": await items_by_worker(server.port, bench),
        "job_s": round(job_s, 2), "files_per_s": round(bench.files / job_s, 1),
        "ingest_s": ingest_s and round(ingest_s, 2),
        "ingest_files_per_s": ingest_s and round(bench.files / ingest_s, 1),
        "server_cpu_s": round(server_cpu, 2), "work_tier_cpu_s": round(tier_cpu, 2),
        "client_cpu_s": round(client_cpu, 2),
    }


def processes_of(tier: list[Any]) -> list[psutil.Process]:
    """The work tier's processes: each worker and its stage processes."""
    return [p for w in tier for p in (psutil.Process(w.process.pid), *psutil.Process(w.process.pid).children(True))]


async def items_by_worker(port: int, bench: Bench) -> dict[str, int]:
    """How many of the session's items each process (``host:pid``) produced: where the job ran."""
    counts: dict[str, int] = {}
    for offset in range(0, bench.files, 500):
        body = (await http_json(port, "GET", f"/api/ingest/{bench.session_id}/items?offset={offset}&limit=500"))[1]
        for item in body["items"]:
            counts[item["worker"]] = counts.get(item["worker"], 0) + 1
    return counts


def scaled_markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| web workers | work tier | clients | streams per worker | p50 ms | p90 ms | p99 ms | max ms | complete "
        "| job s | ingest s | files/s | vs K=0 | server CPU s | work tier CPU s | client CPU s |",
        "|--:|--:|--:|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lat, c = r["latency_ms"], r["completeness"]
        complete = f"{'yes' if c['complete'] else 'NO'} ({c['clients_complete']:,}/{c['clients']:,})" if c else "-"
        cells = [str(r["workers"]), str(r["work_tier"]), fmt(r["clients"]),
                 " / ".join(map(str, r["streams_per_worker"])),
                 *(fmt(lat[p]) for p in ("p50", "p90", "p99", "max")), complete, fmt(r["job_s"]), fmt(r["ingest_s"]),
                 fmt(r["ingest_files_per_s"]), fmt(r["vs_none"]), fmt(r["server_cpu_s"]), fmt(r["work_tier_cpu_s"]),
                 fmt(r["client_cpu_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_scaled(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Every K of ``--clients`` on ``--workers`` workers with Redis and PostgreSQL (and
    ``--work-tier`` worker processes)."""
    global SUMMED_METRICS
    import redis as redis_client

    from ingestapp import create_app
    from ingestapp.store import revision as schema
    from tests.services import postgres_server, redis_server
    from tests.test_worktier import Worker, wait_for_heartbeats

    SUMMED_METRICS = True
    results = []
    with redis_server() as redis, postgres_server() as postgres, redis_client.Redis.from_url(redis.url) as client:
        postgres.execute("CREATE DATABASE pending")
        app = create_app({"DATABASE_URL": postgres.url("pending"), "INSTANCE_PATH": tmp / "migrate"})
        schema.upgrade(app)
        app.extensions["ingest_db"].dispose()
        SHARED_ENV.update(REDIS_URL=redis.url, DATABASE_URL=postgres.url("pending"))
        bench = prepare(tmp, args.files, args.job_timeout)  # the pending session, in database "pending"
        bench.delay = args.file_delay
        if args.work_tier_cpus:  # gunicorn and the clients on the other cores (Redis, PostgreSQL on all)
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - set(args.work_tier_cpus))
        for k in (int(k) for k in args.clients.split(",") if k):
            print(f"sse-scaled workers={args.workers} work tier={args.work_tier} K={k} ...", flush=True)
            database = f"case_{k}"
            postgres.execute(f"CREATE DATABASE {database} TEMPLATE pending")
            client.flushall()  # nothing of the previous case (same session id) on the bus or the task queue
            env = {**server_env(bench.delay), "DATABASE_URL": postgres.url(database),
                   "INGEST_THUMBNAIL_DIR": str(tmp / f"thumbnails-{k}")}
            load_before = os.getloadavg()[0]
            with gunicorn(tmp / f"scaled-{k}", bench.media, {**env, "WEB_CONCURRENCY": str(args.workers)}) as server:
                tier = [Worker(tmp / f"tier-{k}-{i}", {**env, "INGEST_MEDIA_ROOTS": str(bench.media)},
                               args.work_tier_concurrency) for i in range(args.work_tier)]
                try:
                    wait_for_heartbeats(client, tier)
                    for process in processes_of(tier) if args.work_tier_cpus else ():
                        process.cpu_affinity(args.work_tier_cpus)
                    deadline = time.monotonic() + 60
                    while len(psutil.Process(server.process.pid).children()) < args.workers:
                        if time.monotonic() > deadline:
                            raise TimeoutError("the workers did not start")
                        time.sleep(0.1)
                    time.sleep(2.0)  # every worker's bus reader connected
                    result = asyncio.run(scaled_case(server, bench, k, args.workers, tier))
                finally:
                    for worker in tier:
                        worker.stop()
                result["server_log_errors"] = log_errors(server.log)
                result["work_tier_log_errors"] = [line for w in tier for line in log_errors(w.log)][:20]
            result["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            results.append(result)
            print(f"  {json.dumps(result)}", flush=True)
    none = next((r["ingest_files_per_s"] for r in results if r["clients"] == 0), None)
    for r in results:
        r["vs_none"] = none and r["ingest_files_per_s"] and round(r["ingest_files_per_s"] / none, 2)
    return results


def log_errors(log: Path) -> list[str]:
    """The first 20 lines of a server's or worker's log that report an error."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if "Error" in line or "ERROR" in line or "WORKER TIMEOUT" in line][:20]


# -- main ------------------------------------------------------------------------------------------------------


def run_case(bench: Bench, mode: str, k: int) -> dict[str, Any]:
    """One case on a fresh server, in a fresh event loop."""
    case = {"sse": stream_case, "poll": poll_case, "bare-connection": floor_case, "ingest": viewers_case,
            "fanout": viewers_case}[mode]
    load_before = os.getloadavg()[0]
    with fresh_server(bench, f"{mode}-{k}") as server:
        started = time.monotonic()
        result = {"mode": mode, **asyncio.run(case(server, bench, k))}
    result["case_wall_s"] = round(time.monotonic() - started, 1)
    result["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # before, after
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,100,1000,10000", help="SSE client counts K (comma-separated)")
    parser.add_argument("--poll-clients", default="10,100,1000",
                        help="polling baseline client counts (0 or \"\": no polling case)")
    parser.add_argument("--floor-connections", type=int, default=10000,
                        help="bare connections for gunicorn's per-connection RSS floor (0: skip)")
    parser.add_argument("--files", type=int, default=100, help="files in the measured job")
    parser.add_argument("--ingest-viewers", type=int, default=200,
                        help="streams watching a real ingest and the same fan-out without one (0: skip)")
    parser.add_argument("--ingest-files", type=int, default=400, help="photos in the real ingest")
    parser.add_argument("--job-timeout", type=float, default=150, help="seconds a measured job may take")
    parser.add_argument("--workers", type=int, default=0,
                        help="scale-out mode: N gunicorn workers with Redis and PostgreSQL (SSE cases only)")
    parser.add_argument("--work-tier", type=int, default=0,
                        help="with --workers: also W `flask --app ingestapp worker` processes run the jobs")
    parser.add_argument("--work-tier-concurrency", type=int, default=1, help="--concurrency of each of them")
    parser.add_argument("--work-tier-cpus", type=lambda text: [int(c) for c in text.split(",")],
                        help="pin the work tier to these CPUs (e.g. 1) and the web tier and clients to the others")
    parser.add_argument("--file-delay", help="INGEST_FILE_DELAY of the measured job in --workers mode, seconds "
                                             f"(default: 0 with --work-tier, else {FILE_DELAY})")
    parser.add_argument("--connect-concurrency", type=int, default=CONNECT_CONCURRENCY,
                        help="stream handshakes in flight at once")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for the JSON")
    args = parser.parse_args(argv)
    args.file_delay = args.file_delay or ("0" if args.work_tier else FILE_DELAY)
    return args


def main(argv: list[str] | None = None) -> int:
    global CONNECT_CONCURRENCY
    args = parse_args(argv)
    CONNECT_CONCURRENCY = args.connect_concurrency
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up the servers on SIGTERM too
    nofile = raise_nofile_limit()
    started_at = datetime.now(UTC)
    results: list[dict[str, Any]] = []
    if args.workers:
        with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
            results = run_scaled(args, Path(tmp))
        report = {"started_at": started_at.isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
                  "settings": {"INGEST_FILE_DELAY": args.file_delay, "INGEST_WORKERS": WORKERS, "files": args.files,
                               "WEB_CONCURRENCY": args.workers, "work_tier": args.work_tier,
                               "work_tier_concurrency": args.work_tier_concurrency,
                               "work_tier_cpus": args.work_tier_cpus, "connect_concurrency": CONNECT_CONCURRENCY,
                               "pipeline": METADATA_ONLY},
                  "results": results}
        return write_report(args.out, "stream-scaled", started_at, report, scaled_markdown(results))
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        bench = prepare(Path(tmp), args.files, args.job_timeout)
        cases = [("sse", k) for k in counts(args.clients)]
        cases += [("poll", k) for k in counts(args.poll_clients) if k > 0]  # 0 pollers: no polling case
        cases += [("bare-connection", args.floor_connections)] if args.floor_connections else []
        for mode, k in cases:
            print(f"{mode} K={k} ...", flush=True)
            results.append(run_case(bench, mode, k))
            print(f"  {json.dumps(results[-1])}", flush=True)
        if args.ingest_viewers:
            real, fanout = viewers_benches(bench, args.ingest_files)
            print(f"ingest K={args.ingest_viewers} ...", flush=True)
            results.append(run_case(real, "ingest", args.ingest_viewers))
            print(f"  {json.dumps(results[-1])}", flush=True)
            # The same event rate without the work: each of the WORKERS waits WORKERS/rate per file.
            fanout.delay = f"{int(WORKERS) / results[-1]['files_per_s']:.4f}"
            print(f"fanout K={args.ingest_viewers} (INGEST_FILE_DELAY={fanout.delay}) ...", flush=True)
            results.append(run_case(fanout, "fanout", args.ingest_viewers))
            print(f"  {json.dumps(results[-1])}", flush=True)
    report = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "settings": {"INGEST_FILE_DELAY": FILE_DELAY, "INGEST_WORKERS": WORKERS, "files": args.files,
                     "release_streams": RELEASE_STREAMS, "nofile": nofile, "pipeline": METADATA_ONLY},
        "results": results,
        "targets": targets(results),
    }
    return write_report(args.out, "stream", started_at, report, markdown(results))


def counts(text: str) -> list[int]:
    """The client counts of a comma-separated option ("" or "0": none of that case)."""
    return [int(k) for k in text.split(",") if k.strip()]


def write_report(out: Path, name: str, started_at: datetime, report: dict[str, Any], table: str) -> int:
    """Write ``report`` to ``out/<name>-<UTC time>.json``, print the Markdown ``table``; exit status 0."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(table)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
