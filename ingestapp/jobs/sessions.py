"""Session queries: whether a session exists, its state as persisted, and the listing of sessions.

These read the database only; ``registry.JobRegistry`` puts a job running in this process in front of
them (its last commit's state), so the API never disagrees with the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select

from ingestapp.core.errors import JobNotFound
from ingestapp.core.paths import display_path
from ingestapp.store.models import IngestSession


def exists(engine: Engine, session_id: str) -> bool:
    """Whether a session with that id exists."""
    with engine.connect() as conn:
        return conn.scalar(select(IngestSession.id).where(IngestSession.id == session_id)) is not None


def persisted_state(engine: Engine, session_id: str) -> dict[str, Any]:
    """The status JSON as last committed (see README, "State"). Raises JobNotFound."""
    with engine.connect() as conn:
        row = conn.execute(
            select(IngestSession.status, IngestSession.state).where(IngestSession.id == session_id)
        ).first()
    if row is None:
        raise JobNotFound(session_id)
    return {**row.state, "status": row.status}


def listing(
    engine: Engine, limit: int, user_id: int | None, live_state: Callable[[str], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """The newest ``limit`` sessions (of ``user_id`` only, if given): ``{session_id, status,
    created_at, committed_at, commit_result, directory, total_files, processed_files,
    progress_percent, errors}`` (``GET /api/ingest/sessions``); ``commit_result`` is the last
    import's ``{added, updated, excluded}`` or None. ``live_state(session_id)`` gives the state of a
    job running in this process (None for others), used instead of the row's."""
    query = select(
        IngestSession.id,
        IngestSession.created_at,
        IngestSession.committed_at,
        IngestSession.commit_result,
        IngestSession.status,
        IngestSession.state,
    )
    if user_id is not None:
        query = query.where(IngestSession.user_id == user_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(IngestSession.created_at.desc()).limit(limit)).all()
    sessions = []
    for row in rows:  # one query for all; a job running here reports its last commit's state
        live = live_state(row.id)
        state = live if live is not None else {**row.state, "status": row.status}
        sessions.append(
            {
                "session_id": row.id,
                "status": state["status"],
                "created_at": row.created_at,
                "committed_at": row.committed_at,
                "commit_result": row.commit_result,
                "directory": display_path(state["parameters"]["directory"]),
                "total_files": state["total_files"],
                "processed_files": state["processed_files"],
                "progress_percent": state["progress_percent"],
                "errors": state["stats"]["errors"],
            }
        )
    return sessions
