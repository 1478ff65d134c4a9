"""What a watching session has ingested, read from its items: the latest version of each path.

The database is the watch's memory (``jobs.watch``): a reconciliation scan compares each file's
size and mtime with its path's latest item (``items.version``, ``size``, ``mtime_ns``, migration
0006) instead of holding the tree in memory. Short queries, run on the hub between greenlet
switches, a batch of paths at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, tuple_, update

from ingestapp.core.vocabulary import SessionStatus
from ingestapp.jobs.settle import FileStat
from ingestapp.store import db
from ingestapp.store.models import IngestSession, Item


@dataclass(frozen=True, slots=True)
class Known:
    """A path's latest item: its ``version``, the ``size`` and ``mtime_ns`` it was ingested with
    (None for items of sessions from before 0006) and its content's ``sha256`` (None for some errors)."""

    version: int
    size: int | None
    mtime_ns: int | None
    sha256: str | None

    def matches(self, stat: FileStat) -> bool:
        return (self.size, self.mtime_ns) == (stat.size, stat.mtime_ns)


def latest(engine: Engine, session_id: str, paths: list[bytes]) -> dict[bytes, Known]:
    """The latest item of each of ``paths`` (``path_bytes``) in the session that has one. One
    indexed query (``items``' unique ``(session_id, path_bytes, version)``)."""
    if not paths:
        return {}
    query = select(Item.path_bytes, Item.version, Item.size, Item.mtime_ns, Item.sha256).where(
        Item.session_id == session_id, Item.path_bytes.in_(paths)
    )
    found: dict[bytes, Known] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            if row.path_bytes not in found or found[row.path_bytes].version < row.version:
                found[row.path_bytes] = Known(row.version, row.size, row.mtime_ns, row.sha256)
    return found


def record_stat(engine: Engine, session_id: str, path: bytes, version: int, stat: FileStat) -> None:
    """The file was touched but its content is the latest item's: remember its new size and mtime
    there, so the next scan does not read it again."""
    with db.begin(engine) as conn:
        conn.execute(
            update(Item)
            .where(Item.session_id == session_id, Item.path_bytes == path, Item.version == version)
            .values(size=stat.size, mtime_ns=stat.mtime_ns)
        )


def item_ids(engine: Engine, session_id: str, versions: list[tuple[bytes, int]]) -> list[str]:
    """The ids of the items with these ``(path_bytes, version)``."""
    if not versions:
        return []
    with engine.connect() as conn:
        return list(conn.scalars(select(Item.id).where(
            Item.session_id == session_id, tuple_(Item.path_bytes, Item.version).in_(versions)
        )))


def is_watch(engine: Engine, session_id: str) -> bool:
    """Whether the session was started with ``watch``."""
    with engine.connect() as conn:
        parameters = conn.scalar(select(IngestSession.parameters).where(IngestSession.id == session_id))
    return bool(parameters and parameters.get("watch"))


def interrupted_watches(engine: Engine) -> list[str]:
    """Watching sessions that stopped with their process (``interrupted``), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(IngestSession.id, IngestSession.parameters)
            .where(IngestSession.status == SessionStatus.INTERRUPTED)
            .order_by(IngestSession.created_at)
        ).all()
    return [row.id for row in rows if row.parameters.get("watch")]


def import_totals(engine: Engine, session_id: str) -> dict[str, Any] | None:
    """The session's import counts so far (``commit_result``), None before the first."""
    with engine.connect() as conn:
        return conn.scalar(select(IngestSession.commit_result).where(IngestSession.id == session_id))
