"""The review step of a finished session: its items by view, the counts, and the exclusions
(which ok items the import leaves out)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, func, literal_column, select, update

from ingestapp.catalog.records import orm_session, public_fields
from ingestapp.core.vocabulary import ItemStatus
from ingestapp.store import db
from ingestapp.store.models import IngestSession, Item

#: The review's grid filters (``GET /api/ingest/<id>/items?view=``): what each one shows.
REVIEW_VIEWS = ("all", "new", "duplicates", "errors", "nsfw")


def item_to_dict(item: Item) -> dict[str, Any]:
    """The API's ``ItemOut``: ``id, path, status`` and the extracted fields, ``thumbnail_url``,
    ``errors``, ``excluded``, ``worker`` and ``pair_id``."""
    return {"id": item.id, "path": item.path, "status": item.status, **public_fields(item.fields, item.id),
            "errors": item.errors, "excluded": bool(item.excluded), "worker": item.worker, "pair_id": item.pair_id}


def _view_filter(view: str) -> ColumnElement[bool]:
    """The items a review view shows: ``new`` will be imported unless excluded, ``duplicates``
    were skipped, ``errors`` failed a stage, ``nsfw`` were flagged by the NSFW stage."""
    return {
        "all": literal_column("1") == 1,
        "new": Item.status == ItemStatus.OK,
        "duplicates": Item.status == ItemStatus.SKIPPED,
        "errors": Item.status == ItemStatus.ERROR,
        "nsfw": Item.fields["nsfw"].as_boolean().is_(True),
    }[view]


def session_items(engine: Engine, session_id: str, offset: int, limit: int, view: str = "all") -> dict[str, Any]:
    """A page of a session's items in ``view`` (see REVIEW_VIEWS), in path order:
    ``{"items": [...], "total": int}``."""
    where = and_(Item.session_id == session_id, _view_filter(view))
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(Item).where(where))
    with orm_session(engine) as orm:
        rows = orm.scalars(select(Item).where(where).order_by(Item.path).offset(offset).limit(limit)).all()
        return {"items": [item_to_dict(row) for row in rows], "total": total}


def session_review(engine: Engine, session_id: str) -> dict[str, Any]:
    """What the review step shows: ``{"counts": {view: n}, "pairs", "excluded", "import_count",
    "imported", "import_offered"}`` (``pairs``: RAW+JPEG pairs among the items, ``jobs.pairs``).
    ``import_count`` is the ok items not excluded (what Import writes);
    ``imported`` is None or ``{"at" (Unix seconds), "added", "updated", "excluded"}``; an import is
    offered until one happened, and again once the exclusions changed after it."""
    with engine.connect() as conn:
        counts = {view: conn.scalar(select(func.count()).select_from(Item).where(
            Item.session_id == session_id, _view_filter(view))) for view in REVIEW_VIEWS}
        excluded = conn.scalar(select(func.count()).select_from(Item).where(
            Item.session_id == session_id, Item.status == ItemStatus.OK, Item.excluded.is_(True)))
        paired = conn.scalar(select(func.count()).select_from(Item).where(
            Item.session_id == session_id, Item.pair_id.is_not(None)))
        session = conn.execute(
            select(IngestSession.committed_at, IngestSession.commit_result, IngestSession.review_changed_at)
            .where(IngestSession.id == session_id)
        ).one()
    imported = None
    if session.committed_at is not None and session.commit_result is not None:
        imported = {"at": session.committed_at, **session.commit_result}
    changed = session.review_changed_at is not None and (
        session.committed_at is None or session.review_changed_at > session.committed_at
    )
    import_count = counts["new"] - excluded
    return {
        "counts": counts,
        "pairs": paired // 2,
        "excluded": excluded,
        "import_count": import_count,
        "imported": imported,
        "import_offered": import_count > 0 and (imported is None or changed),
    }


def set_excluded(engine: Engine, session_id: str, excluded: bool, ids: list[str] | None, view: str | None) -> None:
    """Exclude (or include again) the session's ok items with ``ids``, or all of ``view``."""
    where = [Item.session_id == session_id, Item.status == ItemStatus.OK]
    where.append(Item.id.in_(ids) if ids is not None else _view_filter(view or "all"))
    with db.begin(engine) as conn:
        conn.execute(update(Item).where(*where).values(excluded=excluded))
        conn.execute(update(IngestSession).where(IngestSession.id == session_id).values(review_changed_at=time.time()))
