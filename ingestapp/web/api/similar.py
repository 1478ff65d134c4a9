"""Similar pictures of a session (issue 19): ``GET /api/ingest/<session_id>/similar``; the grouping
is ``catalog/similar.py``, the catalog's ``similar_to`` filter is ``catalog/search.py``."""

from __future__ import annotations

from typing import Any

import gevent
from flask import Response, current_app, jsonify
from sqlalchemy import Engine

from ingestapp.accounts.auth import check_session_access
from ingestapp.web.api.blueprint import bp, registry
from ingestapp.web.contract import responses, spec
from ingestapp.web.schemas.responses import SimilarGroups

#: Seconds a grouping may take before the request gives up (it runs off the gevent hub).
GROUPING_TIMEOUT = 60


@bp.get("/api/ingest/<session_id>/similar")
@spec.validate(resp=responses(404, HTTP_200=SimilarGroups), tags=["sessions"])
def similar(session_id: str) -> Response:
    """Similar pictures among the session's items, and the catalog entries they match:
    ``{"groups": [{"item_ids", "keep", "exclude", "catalog_ids"}]}``."""
    check_session_access(session_id)  # 404 for an unknown session or another user's
    distance = current_app.config["SIMILAR_DISTANCE"]
    # Reading up to the whole catalog's hashes and grouping them is CPU work: off the hub.
    result = gevent.get_hub().threadpool.spawn(_session_groups, registry().engine, session_id, distance)
    return jsonify(result.get(timeout=GROUPING_TIMEOUT))


def _session_groups(engine: Engine, session_id: str, distance: int) -> dict[str, Any]:
    """``catalog.similar.session_groups``, imported in the thread that runs it, not at start:
    numpy and scipy cost every web process 0.36 s of CPU to load, and loading them must not hold
    the hub."""
    from ingestapp.catalog.similar import session_groups

    return session_groups(engine, session_id, distance)
