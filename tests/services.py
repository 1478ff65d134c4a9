"""Real system services for tests: a ``redis-server`` and a PostgreSQL cluster on free ports.

Each runs from a fresh temporary directory and is stopped (and the directory removed) when its
context manager exits, whatever happens. PostgreSQL refuses to run as root, so when the tests run
as root ``initdb``/``postgres`` run as the ``postgres`` user (``runuser -u postgres``) in a
directory owned by it. The fixtures in ``conftest.py`` wrap these and skip (or fail, with
``INGEST_REQUIRE_SYSTEM_TOOLS=1``) when the Debian packages are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.selection import refuse_servers
from tests.servers import free_port

REDIS_SERVER = "/usr/bin/redis-server"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class RedisServer:
    """A ``redis-server`` with no persistence; ``restart()`` keeps its port (an outage)."""

    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--daemonize", "no"],
            stdout=log, stderr=log,
        )
        log.close()
        _wait_for(lambda: _redis_ping(self.port), "redis-server did not answer PING")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    refuse_servers("redis-server")
    directory = Path(tempfile.mkdtemp(prefix="ingest-redis-"))
    server = RedisServer(free_port(), directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _redis_ping(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster (trust auth on 127.0.0.1, durability off for speed)."""

    port: int
    directory: Path

    def url(self, database: str = "postgres") -> str:
        """An SQLAlchemy URL for psycopg 3."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/{database}", autocommit=True) as conn:
            conn.execute(sql)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    refuse_servers("PostgreSQL")
    directory = Path(tempfile.mkdtemp(prefix="ingest-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
    data = directory / "data"
    server = PostgresServer(free_port(), directory)
    started = False
    try:
        subprocess.run(
            _as_postgres([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                          "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]),
            check=True, capture_output=True,
        )
        options = (f"-p {server.port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        subprocess.run(
            _as_postgres([str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(directory / "postgres.log"),
                          "-o", options, "-w", "-t", "30", "start"]),
            check=True, capture_output=True,
        )
        started = True
        yield server
    finally:
        if started:
            subprocess.run(
                _as_postgres([str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for(check, message: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(message)


def lease_owner_pid(database_url: str, session_id: str) -> int | None:
    """The pid of the process holding the session's lease (``JobRegistry.owner`` is
    ``host:pid:random``), or None when no process holds it."""
    from sqlalchemy import create_engine, select

    from ingestapp.store.models import IngestSession

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            owner = conn.scalar(select(IngestSession.lease_owner).where(IngestSession.id == session_id))
    finally:
        engine.dispose()
    return int(owner.split(":")[-2]) if owner else None
