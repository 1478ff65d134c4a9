"""The ``api`` blueprint and what every API request passes first.

Every route needs a signed-in user or an API token (``accounts/auth.py``: 401 otherwise);
non-admins reach only their own sessions (404 for others'). State-changing requests must be
``application/json`` and same-origin (scheme, host and port; no CORS is offered, so a cross-site
page can neither send one nor read one), and with the cookie they need the CSRF header too.
"""

from __future__ import annotations

from flask import Blueprint, current_app, request, url_for

from ingestapp.accounts.auth import require_api_user
from ingestapp.accounts.security import same_origin
from ingestapp.core.errors import ApiError
from ingestapp.jobs.registry import JobRegistry

bp = Blueprint("api", __name__)


def registry() -> JobRegistry:
    return current_app.extensions["ingest_jobs"]


bp.before_request(require_api_user)  # first: 401 before any other check


@bp.before_request
def _guard_state_changes() -> None:
    if request.method != "POST":
        return
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin):
        raise ApiError(403, "cross-site requests are refused", "Origin")
    if request.mimetype != "application/json":
        raise ApiError(415, "the body must be application/json", None)


def session_urls(session_id: str) -> dict[str, str]:
    return {
        "session_id": session_id,
        "status_url": url_for("api.status", session_id=session_id),
        "stream_url": url_for("api.stream", session_id=session_id),
    }
