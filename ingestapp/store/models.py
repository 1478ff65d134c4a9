"""Database tables (SQLAlchemy 2 ORM): sessions, their items, errors and event log, the catalog,
users, their API tokens and the browser sign-ins signed out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class IngestSession(Base):
    """One ingest job. ``state`` is the status-endpoint JSON as of the last flush."""

    __tablename__ = "ingest_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
    #: The lease of the process running the job (``JobRegistry.owner``, unique per process start); None
    #: when no process runs it. Taken, renewed and released by conditional UPDATEs
    #: (``jobs/leases.py``, ``events/log.py``).
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    #: Unix time (seconds) after which the lease is void and the reaper marks the session interrupted.
    lease_expires_at: Mapped[float | None] = mapped_column(Float, index=True)
    #: Set by a cancel; the owning process sees it on its next commit (it may run elsewhere).
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    #: True while the session is ``queued`` for its turn: its user runs INGEST_MAX_ACTIVE_SESSIONS_PER_USER
    #: sessions already (``jobs/turns.py``). It has no lease owner and was never sent to the work tier.
    awaits_turn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    committed_at: Mapped[float | None] = mapped_column(Float)
    #: The last import's ``{"added", "updated", "excluded"}`` counts (None before the first).
    commit_result: Mapped[dict[str, int] | None] = mapped_column(JSON)
    #: When the review's exclusions last changed: an import is offered again only after that.
    review_changed_at: Mapped[float | None] = mapped_column(Float)
    #: The user who started the session (None for sessions from before accounts existed).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)


class Item(Base):
    """One file found by a session and its extracted results (the API's ``Item``).

    A file is identified by the exact bytes of its name (``path_bytes``); ``path`` is their
    display form (``paths.display_path``: undecodable bytes as ``\\xNN`` escapes), so two names
    may share a display form but never a ``path_bytes``.
    """

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("session_id", "path_bytes", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("ingest_sessions.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # order of completion within the session
    root: Mapped[str] = mapped_column(Text)  # the media root the file was found under
    path: Mapped[str] = mapped_column(Text)  # display form of path_bytes
    path_bytes: Mapped[bytes] = mapped_column(LargeBinary)  # exact bytes, relative to ``root``, "/"-separated
    status: Mapped[str] = mapped_column(String(8))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)  # new_item_fields() shape
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    #: The work-tier process that ran the file's stages, ``host:pid``: a pool process of the web
    #: process (the embedded default) or a ``flask --app ingestapp worker`` process (REDIS_URL).
    worker: Mapped[str | None] = mapped_column(String(128))
    #: Left out of the import by the reviewer (kept server-side, so a reload keeps the choice).
    excluded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The other item of a RAW+JPEG pair (same directory and base name; ``jobs.pairs``), else None.
    pair_id: Mapped[str | None] = mapped_column(String(32))
    #: Perceptual hash of the picture, 16 hex digits (``stages/similar.py``); None: not hashed.
    phash: Mapped[str | None] = mapped_column(String(16))
    #: 1, or n when a watching session ingested the path's n-th content (``jobs.watch``).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    #: The file's size (bytes) and mtime (ns) before its stages ran; watching sessions only.
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)


class ErrorEntry(Base):
    """A failure while ingesting a file: ``{file, stage, message, time}``."""

    __tablename__ = "errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("ingest_sessions.id"), index=True)
    file: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    time: Mapped[float] = mapped_column(Float)


class EventRecord(Base):
    """A published event, kept so streams can replay after a Last-Event-ID."""

    __tablename__ = "events"

    session_id: Mapped[str] = mapped_column(ForeignKey("ingest_sessions.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[str] = mapped_column(Text)  # the event's one-line JSON, as sent


class CatalogEntry(Base):
    """A committed media file, unique by content hash."""

    __tablename__ = "catalog"
    __table_args__ = (Index("ix_catalog_rating", "rating"), Index("ix_catalog_nsfw", "nsfw"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"))
    path: Mapped[str] = mapped_column(Text)  # display form, as Item.path
    root: Mapped[str | None] = mapped_column(Text)  # the media root, as Item.root
    path_bytes: Mapped[bytes | None] = mapped_column(LargeBinary)  # exact bytes, as Item.path_bytes
    rating: Mapped[int | None] = mapped_column(Integer)
    nsfw: Mapped[bool | None]
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    committed_at: Mapped[float] = mapped_column(Float, index=True)
    # Searched, filtered and sorted on: copied out of ``fields`` at commit (see catalog.py).
    score: Mapped[float | None] = mapped_column(Float, index=True)
    taken_at: Mapped[str | None] = mapped_column(String(32), index=True)  # EXIF DateTimeOriginal, ISO 8601
    has_gps: Mapped[bool] = mapped_column(Boolean, default=False)
    media_type: Mapped[str | None] = mapped_column(String(8))  # image | video
    #: Lower-cased path, keywords, camera make and model, lens: what ``q`` searches.
    search_text: Mapped[str] = mapped_column(Text, default="")
    #: The item's perceptual hash, copied at commit (``catalog/similar.py``); None: not hashed.
    phash: Mapped[str | None] = mapped_column(String(16))


class CatalogKeyword(Base):
    """One keyword of a catalog entry, so keyword filters use an index."""

    __tablename__ = "catalog_keywords"

    entry_id: Mapped[str] = mapped_column(ForeignKey("catalog.id", ondelete="CASCADE"), primary_key=True)
    keyword: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)


# Catalog search (``catalog.search_text``) also has objects the models cannot declare: on SQLite an
# FTS5 table kept in sync by triggers, on PostgreSQL a GIN index. Migration 0002 creates them.


class User(Base):
    """An account: signs in with a password (argon2id hash) or uses API tokens."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class ApiToken(Base):
    """An API token of a user. Only the SHA-256 of the token is stored (the token is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)


class SignOut(Base):
    """A browser sign-in that was signed out (``POST /logout``): its cookie is refused from then on,
    and every worker ends its open streams (``accounts.users.valid_principals``). A row is kept as
    long as a cookie of that sign-in could still be valid (``INGEST_SIGN_IN_MAX_AGE``), then pruned."""

    __tablename__ = "sign_outs"

    #: The random id the sign-in put in its session cookie (``accounts.signins.SignIn``).
    sign_in_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: Unix time (seconds); what pruning looks at.
    signed_out_at: Mapped[float] = mapped_column(Float, index=True)
