"""The commit: a session's ok items that are not excluded, written into the catalog; and the
auto-import of a watching session (``import_items``), which writes them the same way."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from ingestapp.catalog.records import orm_session
from ingestapp.core.errors import JobConflict
from ingestapp.core.formats import is_raw
from ingestapp.core.ids import new_id
from ingestapp.core.limits import cap_keywords
from ingestapp.core.parameters import VIDEO_EXTENSIONS
from ingestapp.core.vocabulary import FINISHED_STATUSES, ItemStatus, PairImport, SessionStatus
from ingestapp.store.models import CatalogEntry, CatalogKeyword, IngestSession, Item


def commit_session(
    engine: Engine, session_id: str, exclude: set[str] | None = None, pairs: PairImport = PairImport.BOTH
) -> dict[str, int]:
    """Write the session's ``ok`` items that are not excluded into the catalog in one transaction.

    ``exclude``, when given, replaces the stored exclusions first (the API's ``exclude`` field).
    ``pairs`` says what to take of each RAW+JPEG pair: both, only the RAW or only the JPEG (the
    other is counted as excluded, not marked so); a pair whose other item failed keeps this one.
    Idempotent: an entry with the same SHA-256 is updated, never doubled. The result is kept
    with the session (see ``session_review``). Returns ``{"added", "updated", "excluded"}`` counts.
    Raises JobConflict when a job holds the session's lease (it is running, or a resume took it),
    except while it is ``watching`` (the items so far are imported): the check and the commit are
    one transaction, so a racing resume waits for the commit or the commit refuses.
    """
    now = time.time()
    with orm_session(engine) as orm, orm.begin():
        settled = orm.execute(  # first, so this transaction holds the write lock from here on
            update(IngestSession)
            .where(
                IngestSession.id == session_id,
                or_(  # a watching session's items so far may be imported while it watches
                    and_(IngestSession.lease_owner.is_(None),
                         IngestSession.status.in_((*FINISHED_STATUSES, SessionStatus.INTERRUPTED))),
                    IngestSession.status == SessionStatus.WATCHING,
                ),
            )
            .values(committed_at=now)
        ).rowcount
        if not settled:
            raise JobConflict("the session is running")
        items = orm.scalars(select(Item).where(Item.session_id == session_id, Item.status == ItemStatus.OK)).all()
        if exclude is not None:
            for item in items:
                item.excluded = item.id in exclude
        present = set(orm.scalars(select(Item.id).where(Item.session_id == session_id,
                                                        Item.status != ItemStatus.ERROR)))
        chosen = _pair_choice([item for item in items if not item.excluded], pairs, present)
        added, updated = _write_entries(orm, chosen, now)
        result = {"added": added, "updated": updated, "excluded": len(items) - len(chosen)}
        orm.execute(update(IngestSession).where(IngestSession.id == session_id).values(commit_result=result))
    return result


def _pair_choice(items: list[Item], pairs: PairImport, present: set[str]) -> list[Item]:
    """``items`` less, for ``raw`` (``jpeg``), the JPEG (RAW) of each pair whose other item is
    ``present`` (ok, excluded or a skipped duplicate: not an error, which would lose the shot)."""
    if pairs == PairImport.BOTH:
        return items
    keep_raw = pairs == PairImport.RAW
    return [item for item in items if item.pair_id not in present or is_raw(item.path) == keep_raw]


def import_items(engine: Engine, session_id: str, item_ids: list[str] | None) -> dict[str, int]:
    """Auto-import of a watching session (``jobs.watch``): write its ``ok`` items with ``item_ids``
    (None: every one not in the catalog yet) into the catalog, leaving out excluded items and those
    the NSFW stage flagged (score at or above the session's threshold). One transaction; adds the
    counts to the session's ``commit_result`` and returns this call's ``{"added", "updated",
    "excluded"}`` (``excluded``: the NSFW and excluded items left out)."""
    now = time.time()
    where = [Item.session_id == session_id, Item.status == ItemStatus.OK]
    if item_ids is not None:
        where.append(Item.id.in_(item_ids))
    else:
        where.append(Item.sha256.not_in(select(CatalogEntry.sha256)))
    with orm_session(engine) as orm, orm.begin():
        items = orm.scalars(select(Item).where(*where)).all()
        chosen = [item for item in items if not item.excluded and not item.fields.get("nsfw")]
        added, updated = _write_entries(orm, chosen, now)
        result = {"added": added, "updated": updated, "excluded": len(items) - len(chosen)}
        session = orm.get(IngestSession, session_id)
        before = session.commit_result or dict.fromkeys(result, 0)
        session.commit_result = {key: before.get(key, 0) + value for key, value in result.items()}
        session.committed_at = now
    return result


def _write_entries(orm: Session, items: list[Item], now: float) -> tuple[int, int]:
    """Add or update the catalog entry of each item (unique by SHA-256) and its keywords, in
    ``orm``'s transaction; the counts ``(added, updated)``."""
    added = updated = 0
    hashes = [item.sha256 for item in items]
    existing = {e.sha256: e for e in orm.scalars(select(CatalogEntry).where(CatalogEntry.sha256.in_(hashes)))}
    for item in items:
        entry = existing.get(item.sha256)
        if entry is None:
            entry = existing[item.sha256] = CatalogEntry(id=new_id(), sha256=item.sha256)
            orm.add(entry)
            added += 1
        else:
            updated += 1
        _fill_entry(entry, item, now)
    orm.flush()
    entry_ids = [entry.id for entry in existing.values()]
    orm.execute(delete(CatalogKeyword).where(CatalogKeyword.entry_id.in_(entry_ids)))
    orm.add_all(
        CatalogKeyword(entry_id=entry.id, keyword=keyword)
        for entry in existing.values()
        for keyword in dict.fromkeys(entry.fields["keywords"])
    )
    return added, updated


def _fill_entry(entry: CatalogEntry, item: Item, now: float) -> None:
    fields = _capped(item.fields)
    metadata = fields.get("metadata") or {}
    entry.item_id = item.id
    entry.path = item.path
    entry.root = item.root
    entry.path_bytes = item.path_bytes
    entry.rating = fields["rating"]
    entry.nsfw = fields["nsfw"]
    entry.fields = fields
    entry.committed_at = now
    entry.score = fields.get("score")
    entry.phash = item.phash
    entry.taken_at = metadata.get("datetime_original")
    entry.has_gps = bool(metadata.get("gps"))
    entry.media_type = _media_type(item.path, fields.get("mime_type"))
    entry.search_text = " ".join(
        str(part) for part in (item.path, *fields["keywords"], metadata.get("make"), metadata.get("model"),
                               metadata.get("lens_model")) if part
    ).lower()


def _capped(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with its keywords capped (``core.limits``) and the cut said in its ``warnings``.
    The stages cap them already; this holds the catalog to the caps also for items recorded by an
    earlier release, or by a work-tier worker not yet upgraded."""
    keywords, warning = cap_keywords(fields["keywords"])
    if warning is None:
        return fields
    return {**fields, "keywords": keywords, "warnings": [*fields.get("warnings", []), warning]}


def _media_type(path: str, mime_type: str | None) -> str:
    if mime_type:
        return "video" if mime_type.startswith("video/") else "image"
    return "video" if path.lower().endswith(VIDEO_EXTENSIONS) else "image"
