"""Real servers for tests: gunicorn (gevent worker, the shipped gunicorn.conf.py) as a subprocess."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent.socket

from tests.auth_support import ADMIN, PASSWORD, prepare_instance
from tests.selection import refuse_servers

REPO = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")
#: The test admin's API token of each running test server (or proxy), by port: SSEClient sends it.
TOKENS: dict[int, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running gunicorn (or a proxy in front of one): its port, process and log file, and the
    test admin's API token (``username``/``password`` sign in through /login)."""

    port: int
    process: subprocess.Popen
    log: Path
    token: str | None = None
    username: str = ADMIN
    password: str = PASSWORD

    def __post_init__(self) -> None:
        if self.token:
            TOKENS[self.port] = self.token

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, anonymous: bool = False
    ) -> tuple[int, Any]:
        """One HTTP request with the admin token (none if ``anonymous``; ``headers`` may carry
        another ``Authorization``); returns (status, parsed JSON body or raw bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            all_headers = {"Content-Type": "application/json"} if method == "POST" else {}
            if self.token and not anonymous:
                all_headers["Authorization"] = f"Bearer {self.token}"
            all_headers.update(headers or {})
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            if response.getheader("Content-Type", "").startswith("application/json"):
                return response.status, json.loads(data)
            return response.status, data
        finally:
            conn.close()

    def kill_group(self) -> None:
        """kill -9 the whole server (master and workers): a crash, no cleanup runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def wait_for_status(self, session_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, state = self.request("GET", f"/api/ingest/status/{session_id}")
            if state["status"] in statuses:
                return state
            time.sleep(0.05)
        raise TimeoutError(f"session {session_id} never reached {statuses}: {state['status']}")


@contextmanager
def gunicorn(
    instance: Path, media_root: Path, env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[Server]:
    """Start ``gunicorn -c gunicorn.conf.py wsgi:app`` on ``port`` (default: a free one; a restart
    after a crash passes the old one); stop it on exit. The instance's database gets the test admin
    first, and the Server its new API token."""
    refuse_servers("gunicorn")
    port = port or free_port()
    instance.mkdir(parents=True, exist_ok=True)
    log = instance / f"gunicorn-{port}.log"
    environment = {
        **os.environ,
        "INGEST_INSTANCE_PATH": str(instance),
        "INGEST_MEDIA_ROOTS": str(media_root),
        "INGEST_BIND": f"127.0.0.1:{port}",
        **(env or {}),
    }
    token = prepare_instance(instance, environment.get("DATABASE_URL"))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=REPO, env=environment, stdout=out, stderr=out,
            start_new_session=True,  # its own process group, so a test can kill -9 master and worker at once
        )
    server = Server(port, process, log, token)
    try:
        _wait_until_listening(server)
        yield server
    finally:
        if process.poll() is None:
            # A graceful stop, as systemd's: tests read what it leaves (a job's "interrupted"). The
            # quick one (SIGQUIT) saves 0.8 s but races the job's last write.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        TOKENS.pop(port, None)


def _wait_until_listening(server: Server, timeout: float = 30) -> None:
    """Until a worker answers HTTP, not only the master's socket accepting: a SIGTERM a gunicorn
    worker gets while it boots, before it sets its own handlers, is lost, and the master then
    waits its whole ``graceful_timeout`` (10 s) before it kills the worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{server.log.read_text()}")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=max(0.5, deadline - time.monotonic()))
        try:
            conn.request("GET", "/login")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
        finally:
            conn.close()
    raise TimeoutError(f"gunicorn did not answer:\n{server.log.read_text()}")


class SSEClient:
    """A raw-socket SSE client that reads events incrementally (never the whole infinite body).

    It sends the test admin's token of the server on ``port`` (``TOKENS``) unless ``headers``
    carry an ``Authorization`` of their own or ``anonymous`` is set."""

    def __init__(
        self,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
        anonymous: bool = False,
    ) -> None:
        # gevent's socket, so many clients in one test read concurrently as greenlets.
        self.sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        all_headers = {"Authorization": f"Bearer {TOKENS[port]}"} if port in TOKENS and not anonymous else {}
        all_headers.update(headers or {})
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode("latin-1").strip()):
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self._buffer = b""

    def _read_more(self) -> bool:
        if self.chunked:
            size_line = self.file.readline()
            if not size_line:
                return False
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return False
            self._buffer += self.file.read(size)
            self.file.readline()
            return True
        data = self.file.read1(65536)
        self._buffer += data
        return bool(data)

    def frames(self) -> Iterator[bytes]:
        """Raw frames (events, comments, the retry field) until the server ends the response."""
        while True:
            while b"\n\n" in self._buffer:
                frame, self._buffer = self._buffer.split(b"\n\n", 1)
                yield frame
            if not self._read_more():
                return

    def events(self) -> Iterator[dict[str, Any]]:
        """Parsed events ``{"id", "event", "data" (JSON-decoded), "received_at"}``; skips comments."""
        for frame in self.frames():
            fields: dict[str, Any] = {}
            for line in frame.decode().split("\n"):
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                fields["received_at"] = time.time()
                yield fields

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def auth_headers(server: Server) -> dict[str, str]:
    """The credentials a request outside ``Server.request`` (http.client, schemathesis, Chromium)
    sends to ``server``: its test admin's API token."""
    return {"Authorization": f"Bearer {server.token}"}
