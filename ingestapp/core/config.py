"""Configuration, read from environment variables (all documented in the README)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

#: Hamming bits of perceptual hash up to which two pictures count as the same: the default of
#: INGEST_SIMILAR_DISTANCE, chosen on the test set of bench/similar_set.py (docs/similar.md).
SIMILAR_DISTANCE = 14


def load_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The app configuration as Flask config keys: ``os.environ`` read now, then ``overrides``.

    ``INSTANCE_PATH``, ``MEDIA_ROOTS`` (``INGEST_MEDIA_ROOTS``, ``os.pathsep``-separated) and the
    default SQLite ``DATABASE_URL`` are absolute paths; the two defaults live in the instance dir.
    Times are in seconds unless the name says ms.
    """
    env = os.environ
    config: dict[str, Any] = {
        "INSTANCE_PATH": env.get("INGEST_INSTANCE_PATH", "instance"),
        "MEDIA_ROOTS": [r for r in env.get("INGEST_MEDIA_ROOTS", "").split(os.pathsep) if r],
        "DATABASE_URL": env.get("DATABASE_URL"),
        # Worker processes running the stages, and their nice increment (serving comes first).
        "WORKERS": int(env.get("INGEST_WORKERS", os.cpu_count() or 2)),
        "WORKER_NICE": int(env.get("INGEST_WORKER_NICE", 10)),
        # Seconds a file's stages may take; then its worker process is killed (an error entry).
        "FILE_TIME_LIMIT": float(env.get("INGEST_FILE_TIME_LIMIT", 120)),
        # Thumbnails, keyed by content hash: a shared mount when workers run on other hosts.
        "THUMBNAIL_DIR": env.get("INGEST_THUMBNAIL_DIR"),
        # Signs session cookies; when unset, a random key is kept in INSTANCE_PATH/secret-key.
        "SECRET_KEY": env.get("INGEST_SECRET_KEY"),
        # Host header values served (Flask's TRUSTED_HOSTS; anything else is a 400: DNS rebinding).
        "TRUSTED_HOSTS": [h.strip() for h in env.get("INGEST_TRUSTED_HOSTS", "").split(",") if h.strip()]
        or default_trusted_hosts(env.get("INGEST_BIND", "127.0.0.1:8000")),
        # Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host are believed (ProxyFix).
        "PROXIES": int(env.get("INGEST_PROXIES", 0)),
        # Failed sign-ins allowed per (client address, username) and per client address (Flask-Limiter
        # syntax). Never per username alone: an attacker elsewhere must not lock its owner out.
        "LOGIN_LIMIT": env.get("INGEST_LOGIN_LIMIT", "10 per minute"),
        "LOGIN_ADDRESS_LIMIT": env.get("INGEST_LOGIN_ADDRESS_LIMIT", "50 per minute"),
        # Seconds a browser sign-in lasts at most, however its cookie was kept (accounts/signins.py);
        # also how long a sign-out is remembered. Flask's default cookie lifetime: 31 days.
        "SIGN_IN_MAX_AGE": float(env.get("INGEST_SIGN_IN_MAX_AGE", 31 * 24 * 3600)),
        "RATELIMIT_STORAGE_URI": env.get("REDIS_URL") or "memory://",
        # Request bodies over this many bytes are answered 413 before they are read (Flask's key).
        "MAX_CONTENT_LENGTH": int(env.get("INGEST_MAX_BODY", 1024 * 1024)),
        # Slow clients (web/slow_clients.py): seconds every request body gets, plus its length at
        # this many bytes/s; requests without credentials in progress at once per worker.
        "BODY_TIMEOUT": float(env.get("INGEST_BODY_TIMEOUT", 10)),
        "BODY_MIN_RATE": float(env.get("INGEST_BODY_MIN_RATE", 65536)),
        "MAX_ANONYMOUS": int(env.get("INGEST_MAX_ANONYMOUS", 256)),
        # Live progress over SSE. The keepalive must stay below nginx's proxy_read_timeout.
        "SSE_RETRY_MS": int(env.get("INGEST_SSE_RETRY_MS", 2000)),
        "SSE_KEEPALIVE": float(env.get("INGEST_SSE_KEEPALIVE", 15)),
        "SSE_QUEUE": int(env.get("INGEST_SSE_QUEUE", 1000)),
        # Open streams one user may hold in one worker (web/stream_principals.py; the next is a 429).
        "MAX_STREAMS_PER_USER": int(env.get("INGEST_MAX_STREAMS_PER_USER", 50)),
        "SSE_MAX_AGE": float(env.get("INGEST_SSE_MAX_AGE", 300)),
        # Sessions one user may have running at once (watching ones not counted); more wait for
        # their turn, queued, and start oldest first as the user's running ones end (jobs/turns.py).
        "MAX_ACTIVE_SESSIONS_PER_USER": int(env.get("INGEST_MAX_ACTIVE_SESSIONS_PER_USER", 4)),
        # A stream whose write is blocked this long (the client stopped reading) is dropped.
        "SSE_SEND_TIMEOUT": float(env.get("INGEST_SSE_SEND_TIMEOUT", 30)),
        # A running job's lease on its session: renewed every fifth of it, void once it expires.
        "JOB_LEASE": float(env.get("INGEST_JOB_LEASE", 5)),
        # Files the scan may run ahead of the workers (a bounded queue: memory stays flat).
        "SCAN_QUEUE": int(env.get("INGEST_SCAN_QUEUE", 1000)),
        # Several workers/hosts: the Redis event bus (unset: in-process, one worker only).
        "REDIS_URL": env.get("REDIS_URL") or None,
        "BUS_STREAM": env.get("INGEST_BUS_STREAM", "ingestapp:events"),
        "BUS_MAXLEN": int(env.get("INGEST_BUS_MAXLEN", 100_000)),
        # The work tier with REDIS_URL (Celery tasks, `flask --app ingestapp worker`): files per task,
        # files a job keeps in the work tier at once, and seconds after which a task whose worker
        # vanished is delivered again (Celery's Redis visibility_timeout; it must exceed the
        # longest task, so the default is TASK_FILES x FILE_TIME_LIMIT + 60).
        "TASK_FILES": int(env.get("INGEST_TASK_FILES", 4)),
        "TASK_INFLIGHT": int(env.get("INGEST_TASK_INFLIGHT", 256)),
        "TASK_VISIBILITY_TIMEOUT": float(env["INGEST_TASK_VISIBILITY_TIMEOUT"])
        if env.get("INGEST_TASK_VISIBILITY_TIMEOUT") else None,
        # Hamming bits up to which two pictures count as the same (issue 19, docs/similar.md).
        "SIMILAR_DISTANCE": int(env.get("INGEST_SIMILAR_DISTANCE", SIMILAR_DISTANCE)),
        # Seconds each file waits before processing: 0 in production; lets demos and tests watch.
        "FILE_DELAY": float(env.get("INGEST_FILE_DELAY", 0)),
        # Watch folders (jobs/watch.py): seconds a file's size and mtime must hold still before it
        # is taken; seconds between reconciliation scans; between scans when inotify is unavailable.
        "WATCH_SETTLE": float(env.get("INGEST_WATCH_SETTLE", 2)),
        "WATCH_RESCAN": float(env.get("INGEST_WATCH_RESCAN", 300)),
        "WATCH_POLL": float(env.get("INGEST_WATCH_POLL", 10)),
        # Fault injection for tests: "enospc" makes adding an inotify watch fail as at the limit.
        "WATCH_FAULT": env.get("INGEST_WATCH_FAULT", ""),
    }
    config.update(overrides or {})
    instance = Path(config["INSTANCE_PATH"]).resolve()
    config["INSTANCE_PATH"] = instance
    config["MEDIA_ROOTS"] = [Path(r).resolve() for r in config["MEDIA_ROOTS"]] or [instance / "media"]
    config["DATABASE_URL"] = config["DATABASE_URL"] or f"sqlite:///{instance / 'ingestapp.sqlite3'}"
    config["THUMBNAIL_DIR"] = Path(config["THUMBNAIL_DIR"] or instance / "thumbnails").resolve()
    config["TASK_VISIBILITY_TIMEOUT"] = config["TASK_VISIBILITY_TIMEOUT"] or (
        config["TASK_FILES"] * config["FILE_TIME_LIMIT"] + 60
    )
    config["SECRET_KEY"] = config["SECRET_KEY"] or instance_secret_key(instance)
    return config


def default_trusted_hosts(bind: str) -> list[str]:
    """localhost, 127.0.0.1, [::1] and the host of ``INGEST_BIND`` (``host:port``; ``[v6]:port``)."""
    host = bind.rsplit(":", 1)[0] if not bind.startswith("unix:") else "localhost"
    return list(dict.fromkeys(["localhost", "127.0.0.1", "[::1]", host]))


def instance_secret_key(instance: Path) -> str:
    """A random key kept in ``instance/secret-key`` (mode 0600), so sign-ins survive restarts."""
    path = instance / "secret-key"
    instance.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip()
