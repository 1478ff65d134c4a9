"""This worker's stream metrics, for admins."""

from __future__ import annotations

import gc
import os

from flask import Response, current_app, jsonify, request
from flask_login import current_user
from greenlet import greenlet

from ingestapp.core.errors import ApiError
from ingestapp.web.api.blueprint import bp
from ingestapp.web.contract import responses, spec
from ingestapp.web.schemas.requests import MetricsQuery
from ingestapp.web.schemas.responses import Metrics


@bp.get("/api/ingest/metrics")
@spec.validate(query=MetricsQuery, resp=responses(400, 403, HTTP_200=Metrics), tags=["server"])
def metrics() -> Response:
    """This worker's stream counters, for admins (they name every user's sessions): ``scope``
    "worker" with its ``pid`` (each gunicorn worker answers for itself; ``GET /metrics`` sums them)
    and its event bus (``bus``: local | redis, ``bus_up``). ``?greenlets=1`` adds the live greenlet
    count (walks the heap: slow). 403 for other users."""
    if not current_user.is_admin:
        raise ApiError(403, "only admins see the stream metrics", None)
    result = {
        "scope": "worker",
        "pid": os.getpid(),
        **current_app.extensions["ingest_broker"].metrics(),
        **current_app.extensions["ingest_bus"].status(),
    }
    if request.context.query.greenlets == "1":
        result["greenlets"] = sum(isinstance(o, greenlet) and not o.dead for o in gc.get_objects())
    return jsonify(result)
