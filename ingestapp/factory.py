"""The application factory (``create_app``) and the shutdown of an app's streams, jobs and bus."""

from __future__ import annotations

import functools
from typing import Any

from flask import Flask, Response, current_app
from flask_login import user_logged_out

from ingestapp.accounts import auth, security
from ingestapp.accounts.users import valid_principals
from ingestapp.cli import commands as cli
from ingestapp.core.config import load_config
from ingestapp.events.broker import Broker
from ingestapp.events.bus import create_bus
from ingestapp.jobs.registry import JobRegistry
from ingestapp.store import db
from ingestapp.store import revision as schema
from ingestapp.web import api, contract, errors, pages, prometheus
from ingestapp.web.slow_clients import SlowClientGuard
from ingestapp.web.stream_principals import StreamPrincipals, end_signed_out_streams


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory. ``config`` overrides the environment (see ``config.py``)."""
    settings = load_config(config)
    app = Flask("ingestapp", instance_path=str(settings["INSTANCE_PATH"]))
    app.config.from_mapping(settings)
    app.json.sort_keys = False  # keep the documented field order in responses
    settings["INSTANCE_PATH"].mkdir(parents=True, exist_ok=True)
    if settings["MEDIA_ROOTS"] == [settings["INSTANCE_PATH"] / "media"]:
        settings["MEDIA_ROOTS"][0].mkdir(exist_ok=True)  # the embedded default

    db.init_app(app)
    engine = app.extensions["ingest_db"]
    schema.init_app(app)
    problem = app.extensions["ingest_schema_problem"] = schema.prepare(app)
    jobs = app.extensions["ingest_jobs"] = JobRegistry(engine, app.config)
    broker = app.extensions["ingest_broker"] = Broker(app.config["SSE_QUEUE"])
    app.extensions["ingest_stream_principals"] = StreamPrincipals(
        app.config["MAX_STREAMS_PER_USER"], app.config["SSE_KEEPALIVE"],
        functools.partial(valid_principals, engine, sign_in_max_age=app.config["SIGN_IN_MAX_AGE"]),
    )
    user_logged_out.connect(end_signed_out_streams)  # once per process: blinker keys it by the function
    bus = app.extensions["ingest_bus"] = create_bus(app.config, on_gap=broker.resync)
    bus.start()
    if bus.status()["bus"] == "redis":  # REDIS_URL, in a gevent-patched process: the work tier too
        from ingestapp.work import tasks

        tasks.celery_init_app(app)
        redis = app.extensions["ingest_redis"] = tasks.redis_client(app.config["REDIS_URL"])
        jobs.use_work_tier(redis, tasks.send_session)
    if problem is None:
        jobs.start_reaper()  # sessions of dead processes become interrupted (after the bus: it publishes)
    else:  # only ``flask db ...`` can do anything useful with this app; servers refuse to start
        app.before_request(_refuse_out_of_date_schema)

    errors.init_app(app)
    security.init_app(app)
    app.wsgi_app = SlowClientGuard(  # type: ignore[method-assign]  # outermost: it sees every request
        app.wsgi_app, app.config["BODY_TIMEOUT"], app.config["BODY_MIN_RATE"], app.config["MAX_ANONYMOUS"],
        app.config["SESSION_COOKIE_NAME"],
    )
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(prometheus.bp)
    app.register_blueprint(contract.bp)
    app.register_blueprint(pages.bp)
    cli.init_app(app)
    return app


def _refuse_out_of_date_schema() -> Response:
    return errors.error_response(503, current_app.extensions["ingest_schema_problem"], None)


def shutdown(app: Flask) -> None:
    """End every open stream and stop the running jobs (they become ``interrupted``)."""
    app.extensions["ingest_stream_principals"].stop()
    app.extensions["ingest_broker"].close_all()
    app.extensions["ingest_jobs"].shutdown()
    app.extensions["ingest_bus"].close()
