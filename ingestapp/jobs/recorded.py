"""What earlier runs of a session recorded, read when it resumes: the job goes on from the items in
the database, never from counters that ran ahead of them.

A file's stage counters and error entries are written as its stages report, its item when it is
done; a process that dies in between leaves the file without an item (it runs again on resume) but
with counters and error entries that already counted it. So a resume takes the stage counts from
the items and drops the error entries of files that have none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, select

from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import StageName
from ingestapp.jobs.state import ERRORS_KEPT, Recorded, StageCount
from ingestapp.store.models import ErrorEntry, IngestSession, Item


@dataclass(frozen=True)
class Earlier:
    """A resumed session's past: its ``parameters``, ``saved_state`` (as last committed) and
    ``last_event_id``; ``done_paths`` (``path_bytes`` of its items), ``seen_hashes`` (SHA-256 →
    the file that has it) and what its items say for its state (``recorded``)."""

    parameters: IngestParameters
    saved_state: dict[str, Any]
    last_event_id: int
    done_paths: set[bytes]
    seen_hashes: dict[str, Path]
    recorded: Recorded


def read(conn: Connection, session_id: str) -> Earlier:
    """Read what earlier runs of ``session_id`` recorded, in ``conn``'s transaction, after dropping
    the error entries of the files they did not finish (``drop_unfinished_errors``)."""
    session = conn.execute(
        select(IngestSession.parameters, IngestSession.state, IngestSession.last_event_id)
        .where(IngestSession.id == session_id)
    ).one()
    drop_unfinished_errors(conn, session_id)
    items = conn.execute(
        select(Item.root, Item.path_bytes, Item.sha256).where(Item.session_id == session_id)
    ).all()
    # Each stage error is an entry in the errors table and in its item's ``errors``: after the drop
    # above, counting the entries (in SQL) counts what the items say.
    errors_by_stage = dict(conn.execute(
        select(ErrorEntry.stage, func.count()).where(ErrorEntry.session_id == session_id).group_by(ErrorEntry.stage)
    ).all())
    stages = {name: StageCount(processed=len(items), errors=errors_by_stage.get(name, 0))
              for name in session.state["stages"] if name != StageName.SCANNING}
    recent = conn.execute(
        select(ErrorEntry.file, ErrorEntry.stage, ErrorEntry.message, ErrorEntry.time)
        .where(ErrorEntry.session_id == session_id)
        .order_by(ErrorEntry.id.desc())
        .limit(ERRORS_KEPT)
    ).all()
    return Earlier(
        parameters=IngestParameters(**session.parameters),
        saved_state=session.state,
        last_event_id=session.last_event_id,
        done_paths={item.path_bytes for item in items},
        seen_hashes={item.sha256: Path(item.root) / os.fsdecode(item.path_bytes) for item in items if item.sha256},
        recorded=Recorded(stages=stages, error_count=sum(errors_by_stage.values()),
                          recent_errors=[row._asdict() for row in reversed(recent)]),
    )


def drop_unfinished_errors(conn: Connection, session_id: str) -> int:
    """Delete the stage error entries of files with no item (in flight when the session's process
    died: they run again); the scan's own entries stay. Returns how many were deleted."""
    recorded_files = select(Item.path).where(Item.session_id == session_id)
    return conn.execute(
        delete(ErrorEntry).where(
            ErrorEntry.session_id == session_id,
            ErrorEntry.stage != StageName.SCANNING,
            ErrorEntry.file.not_in(recorded_files),
        )
    ).rowcount
