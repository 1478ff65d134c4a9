"""ingestapp: ingest a directory of photos and videos, with live progress over SSE.

The data path: ``api.py`` (blueprint) starts a job → ``jobs.py`` (a greenlet per session, stages
in worker processes: ``workpool.py``; with ``REDIS_URL``, in ``flask --app ingestapp worker``
processes: ``tasks.py``, ``remote.py``) → ``eventlog.py`` (commits each event) → ``events.py``
(publishes it) → ``bus.py`` (in-process, or Redis Streams across workers) → ``broker.py``
(per-client bounded queues) → ``stream.py`` (the SSE response) → ``static/ingest.js``.

The application factory is ``factory.create_app``, reached as ``ingestapp.create_app`` (what
``flask --app ingestapp`` and ``wsgi.py`` use). It is imported on first use (PEP 562) so that the
stage processes, which import ``ingestapp.work.pool`` and the stage modules only, do not load Flask,
SQLAlchemy, Alembic and the rest of the web app.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "shutdown"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ingestapp import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
