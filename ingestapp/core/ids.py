"""Ids of sessions, items and other rows: unguessable, so one cannot be found by trying others."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """An unguessable id: 128 random bits, URL-safe base64 (22 characters)."""
    return secrets.token_urlsafe(16)
