"""``GET /api/ingest/<session_id>/similar``: the session's items that show the same picture
(issue 19; the grouping is ``catalog/similar.py``). Same rules as the rest of ``/api``: a signed-in
user or an API token (401), only one's own sessions unless admin (404), JSON errors."""

from __future__ import annotations

import gevent
from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, Field

from ingestapp.accounts.auth import check_session_access, require_api_user
from ingestapp.catalog.similar import session_groups
from ingestapp.core.errors import JobNotFound
from ingestapp.web.contract import responses, spec
from ingestapp.web.errors import error_response

bp = Blueprint("similar", __name__)
bp.before_request(require_api_user)  # 401 before any other check, as the api blueprint

#: Seconds a grouping may take before the request gives up (it runs off the gevent hub).
GROUPING_TIMEOUT = 60


class SimilarGroup(BaseModel):
    item_ids: list[str] = Field(description="the session's ok items that show the same picture, by path")
    keep: str = Field(description="the suggested keeper: most pixels, then sharpest, then largest file")
    exclude: list[str] = Field(description='what "keep the best" leaves out: the others, except items of a '
                               "RAW+JPEG pair")
    catalog_ids: list[str] = Field(description="catalog entries showing the same picture")


class SimilarGroups(BaseModel):
    """Groups of two or more items, or of one item that matches catalog entries; within
    ``INGEST_SIMILAR_DISTANCE`` bits of perceptual hash (docs/similar.md)."""

    groups: list[SimilarGroup]


@bp.errorhandler(JobNotFound)
def _not_found(_exc: JobNotFound) -> Response:
    return error_response(404, "no such session", "session_id")


@bp.get("/api/ingest/<session_id>/similar")
@spec.validate(resp=responses(404, HTTP_200=SimilarGroups), tags=["sessions"])
def similar(session_id: str) -> Response:
    """Similar pictures among the session's items, and the catalog entries they match:
    ``{"groups": [{"item_ids", "keep", "exclude", "catalog_ids"}]}``."""
    check_session_access(session_id)  # 404 for an unknown session or another user's
    engine, distance = current_app.extensions["ingest_db"], current_app.config["SIMILAR_DISTANCE"]
    # Reading up to the whole catalog's hashes and grouping them is CPU work: off the hub.
    result = gevent.get_hub().threadpool.spawn(session_groups, engine, session_id, distance)
    return jsonify(result.get(timeout=GROUPING_TIMEOUT))
