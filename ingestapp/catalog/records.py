"""What the review and the catalog share: the ORM session they read with, and an item's extracted
fields as the API shows them (the thumbnail as a URL served by item id, never a file name)."""

from __future__ import annotations

from typing import Any

from flask import url_for
from sqlalchemy import Engine
from sqlalchemy.orm import Session


def public_fields(fields: dict[str, Any], item_id: str) -> dict[str, Any]:
    """The extracted fields with the stored thumbnail name replaced by its URL (served by item id),
    and ``warnings`` (``[]`` for items of releases that had none)."""
    public = {"warnings": [], **{key: value for key, value in fields.items() if key != "thumbnail"}}
    public["thumbnail_url"] = url_for("api.thumbnail", item_id=item_id) if fields.get("thumbnail") else None
    return public


def orm_session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
