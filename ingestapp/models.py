"""Database tables (SQLAlchemy 2 ORM): sessions, their items, errors and event log, the catalog,
users and their API tokens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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
    #: "host:pid" of the process running the job; lets startup tell a dead owner from a live one.
    owner: Mapped[str | None] = mapped_column(String(128))
    committed_at: Mapped[float | None] = mapped_column(Float)
    #: The user who started the session (None for sessions from before accounts existed).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)


class Item(Base):
    """One file found by a session and its extracted results (the API's ``Item``)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("session_id", "path"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("ingest_sessions.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # order of completion within the session
    root: Mapped[str] = mapped_column(Text)  # the media root the file was found under
    path: Mapped[str] = mapped_column(Text)  # relative to ``root``, POSIX separators
    status: Mapped[str] = mapped_column(String(8))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)  # new_item_fields() shape
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


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
    path: Mapped[str] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)
    nsfw: Mapped[bool | None]
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    committed_at: Mapped[float] = mapped_column(Float)


class CatalogKeyword(Base):
    """One keyword of a catalog entry, so keyword filters use an index."""

    __tablename__ = "catalog_keywords"

    entry_id: Mapped[str] = mapped_column(ForeignKey("catalog.id", ondelete="CASCADE"), primary_key=True)
    keyword: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)


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
