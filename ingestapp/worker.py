"""A process of the scale-out work tier (``REDIS_URL``), started by ``flask --app ingestapp worker``
(``cli/commands.py``).

It wraps a Celery worker (``work/tasks.py``) with the gevent pool: its greenlets run the jobs it takes
and the file tasks it receives, and the stage work runs in its own pool of ``--concurrency`` worker
processes at ``INGEST_WORKER_NICE`` (``work/pool.py``), as in the web server of the embedded default.
Run any number, on any host that reaches Redis and the database and mounts the media roots and
``INGEST_THUMBNAIL_DIR`` at the same paths (README, "Scaling out").

The command re-executes itself as ``python -m gevent.monkey --module ingestapp.worker``: gevent must
patch the standard library before anything else imports it, and ``flask`` has already imported the
app (so nothing in the package imports this module). The process keeps its pid, so what started
it can signal it: SIGTERM is Celery's warm shutdown (running tasks finish; the jobs this process
runs are queued again for the others).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
from flask import Flask

from ingestapp.work.protocol import worker_name
from ingestapp.work.remote import HEARTBEAT, WORKER_FRESH, WORKERS_KEY

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """The worker process, once gevent has patched it (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="flask --app ingestapp worker")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ingestapp.factory import create_app, shutdown
    from ingestapp.work import tasks

    app = create_app({"WORKERS": args.concurrency})
    problem = app.extensions["ingest_schema_problem"]
    if problem is not None:
        sys.exit(problem)
    redis = app.extensions["ingest_redis"]
    registry = app.extensions["ingest_jobs"]
    registry.use_work_tier(redis, tasks.send_session, tasks.send_files)
    registry.pool.start()
    registry.serve()
    celery = app.extensions["celery"]
    helpers = [gevent.spawn(_beat, redis), gevent.spawn(_restore_unacked, celery)]
    worker = celery.Worker(
        pool="gevent", concurrency=args.concurrency, queues=[tasks.QUEUE], hostname=f"ingestapp@{worker_name()}",
        loglevel=args.loglevel.upper(), without_gossip=True, without_mingle=True, without_heartbeat=True,
    )
    try:
        worker.start()
    finally:
        gevent.killall(helpers)
        redis.zrem(WORKERS_KEY, worker_name())
        _hand_over(app, shutdown)
    sys.exit(worker.exitcode)


def _beat(redis: Any) -> None:
    """Say this worker is alive every HEARTBEAT seconds (web processes send jobs only while one is)."""
    while True:
        try:
            redis.zadd(WORKERS_KEY, {worker_name(): time.time()})
            redis.zremrangebyscore(WORKERS_KEY, "-inf", time.time() - 10 * WORKER_FRESH)
        except Exception:
            log.exception("worker heartbeat failed; retrying")
        gevent.sleep(HEARTBEAT)


def _restore_unacked(celery: Any) -> None:
    """Deliver again, every quarter of the visibility timeout (1 to 30 s), the tasks whose worker
    died. kombu's Redis transport looks for them only when a poll finds nothing, which never
    happens while a gevent worker with room for tasks waits in BRPOP (celery#4968): without this,
    a dead worker's tasks stay unacknowledged for good."""
    every = min(30.0, max(1.0, celery.conf.broker_transport_options["visibility_timeout"] / 4))
    with celery.connection_for_write() as connection:
        qos = connection.default_channel.qos
        while True:
            gevent.sleep(every)
            try:
                qos.restore_visible(num=None, interval=1)  # num: all of them; interval 1: no throttle
            except Exception:
                log.exception("restoring the tasks of dead workers failed; retrying")


def _hand_over(app: Flask, shutdown: Callable[[Flask], None]) -> None:
    """Stop this worker's jobs (they become ``interrupted``) and queue them again for the others."""
    registry = app.extensions["ingest_jobs"]
    running = list(registry.jobs)
    shutdown(app)
    for session_id in running:
        try:
            registry.requeue(session_id)
        except Exception:
            log.exception("session %s: could not be queued again; resume it by hand", session_id)


if __name__ == "__main__":
    main()
