"""The commit: a session's ok items that are not excluded, written into the catalog; and the
auto-import of a watching session (``import_items``), which writes them the same way.

Both write ``CHUNK`` items per transaction, each holding SQLite's one write lock for a few
milliseconds, so the writers of running jobs (whose events wait for their commit) get it in
between, however big the session (bench/commit_bench.py: with 100 items per transaction a viewer's
events waited up to 200 ms on a loaded machine; docs/benchmarks.md). A commit cut short (a crash, a
restart) is repeated as a whole: an entry is unique by SHA-256 and is updated, never doubled, so a
second commit finishes the first. Call them off the gevent hub (``store.db.off_hub``): a
50,000-item commit is seconds of work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, bindparam, delete, insert, or_, select, update

from ingestapp.core.errors import JobConflict
from ingestapp.core.formats import is_raw
from ingestapp.core.ids import new_id
from ingestapp.core.limits import cap_keywords
from ingestapp.core.parameters import VIDEO_EXTENSIONS
from ingestapp.core.vocabulary import FINISHED_STATUSES, ItemStatus, PairImport, SessionStatus
from ingestapp.store import db
from ingestapp.store.models import CatalogEntry, CatalogKeyword, IngestSession, Item

#: Items per transaction: a running job's writer waits for at most one such transaction (5-15 ms).
CHUNK = 25
#: Ids per ``IN (...)`` list of the exclusions (under every database's parameter limit).
IN_LIST = 500
#: What a catalog entry is made from.
ITEM_COLUMNS = (Item.id, Item.sha256, Item.path, Item.root, Item.path_bytes, Item.fields, Item.phash)
CATALOG = CatalogEntry.__table__


def commit_session(
    engine: Engine, session_id: str, exclude: set[str] | None = None, pairs: PairImport = PairImport.BOTH
) -> dict[str, int]:
    """Write the session's ``ok`` items that are not excluded into the catalog.

    ``exclude``, when given, replaces the stored exclusions first (the API's ``exclude`` field).
    ``pairs`` says what to take of each RAW+JPEG pair: both, only the RAW or only the JPEG (the
    other is counted as excluded, not marked so); a pair whose other item failed keeps this one.
    Idempotent: an entry with the same SHA-256 is updated, never doubled. The result is kept
    with the session (see ``session_review``). Returns ``{"added", "updated", "excluded"}`` counts.
    Raises JobConflict when a job holds the session's lease (it is running, or a resume took it),
    except while it is ``watching`` (the items so far are imported). The check, the exclusions and
    the choice of items are one transaction; the items chosen are then written ``CHUNK`` at a time.
    """
    now = time.time()
    with db.begin(engine) as conn:
        settled = conn.execute(  # first, so this transaction holds the write lock from here on
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
        if exclude is not None:
            _store_exclusions(conn, session_id, exclude)
        ok = conn.execute(select(Item.id, Item.path, Item.pair_id, Item.excluded)
                          .where(Item.session_id == session_id, Item.status == ItemStatus.OK)).all()
        present = set(conn.scalars(select(Item.id).where(Item.session_id == session_id,
                                                         Item.status != ItemStatus.ERROR)))
    chosen = _pair_choice([row for row in ok if not row.excluded], pairs, present)
    added, updated = write_entries(engine, [row.id for row in chosen], now)
    result = {"added": added, "updated": updated, "excluded": len(ok) - len(chosen)}
    with db.begin(engine) as conn:
        conn.execute(update(IngestSession).where(IngestSession.id == session_id).values(commit_result=result))
    return result


def _store_exclusions(conn: Connection, session_id: str, exclude: set[str]) -> None:
    """Mark exactly the session's items in ``exclude`` as excluded (two statements per chunk)."""
    conn.execute(update(Item).where(Item.session_id == session_id, Item.excluded).values(excluded=False))
    for ids in _chunks(sorted(exclude), IN_LIST):
        conn.execute(update(Item).where(Item.session_id == session_id, Item.id.in_(ids)).values(excluded=True))


def _pair_choice(items: list[Row], pairs: PairImport, present: set[str]) -> list[Row]:
    """``items`` less, for ``raw`` (``jpeg``), the JPEG (RAW) of each pair whose other item is
    ``present`` (ok, excluded or a skipped duplicate: not an error, which would lose the shot)."""
    if pairs == PairImport.BOTH:
        return items
    keep_raw = pairs == PairImport.RAW
    return [item for item in items if item.pair_id not in present or is_raw(item.path) == keep_raw]


def import_items(engine: Engine, session_id: str, item_ids: list[str] | None) -> dict[str, int]:
    """Auto-import of a watching session (``jobs.watch``): write its ``ok`` items with ``item_ids``
    (None: every one not in the catalog yet) into the catalog, leaving out excluded items and those
    the NSFW stage flagged (score at or above the session's threshold). Adds the counts to the
    session's ``commit_result`` and returns this call's ``{"added", "updated", "excluded"}``
    (``excluded``: the NSFW and excluded items left out)."""
    now = time.time()
    where = [Item.session_id == session_id, Item.status == ItemStatus.OK]
    if item_ids is not None:
        where.append(Item.id.in_(item_ids))
    else:
        where.append(Item.sha256.not_in(select(CatalogEntry.sha256)))
    with engine.connect() as conn:
        rows = conn.execute(select(Item.id, Item.excluded, Item.fields["nsfw"].as_boolean().label("nsfw"))
                            .where(*where)).all()
    chosen = [row.id for row in rows if not row.excluded and not row.nsfw]
    added, updated = write_entries(engine, chosen, now)
    result = {"added": added, "updated": updated, "excluded": len(rows) - len(chosen)}
    with db.begin(engine) as conn:
        before = conn.scalar(select(IngestSession.commit_result).where(IngestSession.id == session_id))
        before = before or dict.fromkeys(result, 0)
        total = {key: before.get(key, 0) + value for key, value in result.items()}
        conn.execute(update(IngestSession).where(IngestSession.id == session_id)
                     .values(commit_result=total, committed_at=now))
    return result


def write_entries(engine: Engine, item_ids: Sequence[str], now: float) -> tuple[int, int]:
    """Add or update the catalog entry (unique by SHA-256) and keywords of each item in
    ``item_ids``, one transaction per ``CHUNK``; the counts ``(added, updated)``."""
    added = updated = 0
    for ids in _chunks(item_ids, CHUNK):
        with db.begin(engine) as conn:
            chunk_added, chunk_updated = _write_chunk(conn, conn.execute(select(*ITEM_COLUMNS)
                                                                         .where(Item.id.in_(ids))).all(), now)
        added, updated = added + chunk_added, updated + chunk_updated
    return added, updated


def _write_chunk(conn: Connection, items: Sequence[Row], now: float) -> tuple[int, int]:
    """One chunk, in ``conn``'s transaction: executemany INSERTs and UPDATEs, not ORM objects
    (a tenth of the time: the write lock is held that much less)."""
    existing = dict(conn.execute(select(CatalogEntry.sha256, CatalogEntry.id)
                                 .where(CatalogEntry.sha256.in_({item.sha256 for item in items}))).all())
    new_rows: dict[str, dict[str, Any]] = {}  # by SHA-256: an item sharing one with an earlier updates it
    changed_rows: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.sha256 in existing:
            changed_rows[item.sha256] = {**_entry_values(item, now), "entry_id": existing[item.sha256]}
        elif item.sha256 in new_rows:
            new_rows[item.sha256] |= _entry_values(item, now)
        else:
            new_rows[item.sha256] = {"id": new_id(), "sha256": item.sha256, **_entry_values(item, now)}
    if new_rows:
        conn.execute(insert(CATALOG), list(new_rows.values()))
    if changed_rows:
        conn.execute(update(CATALOG).where(CATALOG.c.id == bindparam("entry_id")), list(changed_rows.values()))
        conn.execute(delete(CatalogKeyword).where(CatalogKeyword.entry_id.in_(
            [row["entry_id"] for row in changed_rows.values()])))
    keywords = [{"entry_id": row.get("entry_id") or row["id"], "keyword": keyword}
                for row in (*new_rows.values(), *changed_rows.values())
                for keyword in dict.fromkeys(row["fields"]["keywords"])]
    if keywords:
        conn.execute(insert(CatalogKeyword), keywords)
    return len(new_rows), len(items) - len(new_rows)


def _entry_values(item: Row, now: float) -> dict[str, Any]:
    """The catalog columns an item gives its entry (all but ``id`` and ``sha256``)."""
    fields = _capped(item.fields)
    metadata = fields.get("metadata") or {}
    return {
        "item_id": item.id,
        "path": item.path,
        "root": item.root,
        "path_bytes": item.path_bytes,
        "rating": fields["rating"],
        "nsfw": fields["nsfw"],
        "fields": fields,
        "committed_at": now,
        "score": fields.get("score"),
        "phash": item.phash,
        "taken_at": metadata.get("datetime_original"),
        "has_gps": bool(metadata.get("gps")),
        "media_type": _media_type(item.path, fields.get("mime_type")),
        "search_text": " ".join(
            str(part) for part in (item.path, *fields["keywords"], metadata.get("make"), metadata.get("model"),
                                   metadata.get("lens_model")) if part
        ).lower(),
    }


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


def _chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]
