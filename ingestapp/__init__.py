"""ingestapp: ingest a directory of photos and videos, with live progress over SSE.

The data path: ``web/api`` (blueprint) starts a job → ``jobs/job.py`` (a greenlet per session;
each file's stages run in stage processes, ``work/pool.py``, or with ``REDIS_URL`` in
``flask --app ingestapp worker`` processes, ``work/tasks.py`` and ``work/remote.py``) →
``jobs/writer.py`` (where every event is born) → ``events/log.py`` (commits it) →
``events/bus.py`` (publishes it: in-process, or Redis Streams across workers) →
``events/broker.py`` (per-client bounded queues) → ``events/sse.py`` (the SSE response) →
``static/connection.js`` and ``static/ingest.js``. Each sub-package's docstring says what it owns
and what it may import; ``docs/architecture.md`` gives the rules.

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
