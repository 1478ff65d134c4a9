"""``GET /metrics``: the Prometheus text format, outside ``/api`` and its JSON contract, behind the
same sign-in (an API token: Prometheus's ``authorization`` setting). The counters are defined in
``core/metrics.py``; sessions by status are read from the database at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from ingestapp.accounts.auth import require_api_user
from ingestapp.store.models import IngestSession

bp = Blueprint("prometheus", __name__)
bp.before_request(require_api_user)


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """The Prometheus text format, summed over the gunicorn workers; 401 without credentials."""
    body, content_type = render(current_app.extensions["ingest_db"])
    return Response(body, content_type=content_type)


class SessionsByStatus(Collector):
    """``ingest_sessions{status}``: a database count, so the same from every worker and host."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("ingest_sessions", "Sessions by status.", labels=["status"])
        with self.engine.connect() as conn:
            rows = conn.execute(select(IngestSession.status, func.count()).group_by(IngestSession.status)).all()
        for status, count in rows:
            family.add_metric([status], count)
        yield family


def render(engine: Engine) -> tuple[bytes, str]:
    """The exposition text and its content type (the Prometheus text format)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        workers = CollectorRegistry()
        multiprocess.MultiProcessCollector(workers)
    else:
        workers = REGISTRY
    database = CollectorRegistry()
    database.register(SessionsByStatus(engine))
    return generate_latest(workers) + generate_latest(database), CONTENT_TYPE_LATEST
