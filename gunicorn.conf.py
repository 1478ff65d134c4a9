"""gunicorn settings for ingestapp: gevent worker, sized for thousands of open SSE streams.

Every value can be overridden on the command line or with GUNICORN_CMD_ARGS.
"""

import os
import resource
import shutil
import tempfile

bind = os.environ.get("INGEST_BIND", "127.0.0.1:8000")
worker_class = "gevent"
# Workers: WEB_CONCURRENCY (gunicorn's convention), default 1. More than one needs REDIS_URL (the
# event bus between workers) and a PostgreSQL DATABASE_URL (the shared store): see on_starting.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# No runtime control socket ($HOME/.gunicorn/gunicorn.ctl by default, shared by every gunicorn
# of the user): it can change the worker count behind the check below.
control_socket_disable = True
# Each open SSE stream holds one connection (one greenlet); room for 10,000 viewers, but always
# below the open-files limit, so a flood of connections fills the accept queue instead of leaving
# the worker without descriptors for its database, stage pipes and thumbnails (a reserve of 1,024).
# The soft limit is raised to the hard one (systemd: LimitNOFILE=65536 in deploy/*.service).
_OPEN_FILES = resource.getrlimit(resource.RLIMIT_NOFILE)
if _OPEN_FILES[0] != _OPEN_FILES[1]:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_OPEN_FILES[1], _OPEN_FILES[1]))
_FD_RESERVE = 1024
worker_connections = max(64, min(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - _FD_RESERVE))
# X-Forwarded-Proto and friends are believed only from the configured proxies: with
# INGEST_PROXIES=0 from no address at all (gunicorn's default would trust 127.0.0.1 and ::1, so any
# local client could claim https); with N > 0, from nginx on this host (FORWARDED_ALLOW_IPS
# overrides, for a proxy on another host). ProxyFix in the app applies the same count.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or (
    "127.0.0.1,::1" if int(os.environ.get("INGEST_PROXIES", "0")) > 0 else ""
)
# No preload: the app (its threadpool, database engine and hub) is created after the fork,
# inside the worker, once gevent has monkey-patched it.
preload_app = False
# SSE streams end themselves at shutdown (post_worker_init below), so a short grace suffices.
graceful_timeout = 10
timeout = 30
# Seconds an idle keep-alive connection is held. A finished stream's connection waits this long
# for a next request, also at shutdown, so keep it short (gunicorn's default).
keepalive = 2
# gunicorn's maximum (default 4094), so a path up to PATH_MAX (4096 bytes) fits a browse query and
# reaches the app, which answers a JSON 400 for it (nginx's default request-line buffer is 8k too).
limit_request_line = 8190
accesslog = "-"
errorlog = "-"

# prometheus_client's multiprocess mode: each worker writes its metrics to files in this directory
# and GET /metrics sums them. It must be set before a worker imports the app; a directory of our own
# unless PROMETHEUS_MULTIPROC_DIR is given (then it is emptied at start, as the library requires).
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def on_starting(server):
    """Refuse several workers without a shared bus and store; start with no stale metrics."""
    if server.cfg.workers > 1:
        missing = []
        if not os.environ.get("REDIS_URL"):
            missing.append("REDIS_URL (the Redis event bus; without it a viewer on one worker never "
                           "hears a job running on another)")
        if os.environ.get("DATABASE_URL", "sqlite").startswith("sqlite"):
            missing.append("DATABASE_URL=postgresql+psycopg://... (the shared store)")
        if missing:
            raise RuntimeError(f"{server.cfg.workers} workers need " + " and ".join(missing)
                               + "; set them, or run one worker (WEB_CONCURRENCY=1)")
    if _own_metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ingestapp-metrics-")
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.remove(os.path.join(metrics_dir, name))


def child_exit(server, worker):
    """A worker's live gauges (open streams) stop counting once it is gone."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker):
    """Start the work pool's processes; end open streams and interrupt running jobs as soon as
    the worker is asked to stop.

    gunicorn's gevent worker waits up to ``graceful_timeout`` for open connections; an SSE
    stream never finishes on its own, so it is closed here instead (browsers reconnect).
    """
    import gc

    import gevent

    from ingestapp import shutdown

    worker.wsgi.extensions["ingest_jobs"].pool.start()  # warm before the first ingest
    # The app's ~140,000 objects from its start live as long as the worker: move them out of the
    # collector's reach (gc.freeze), so a full collection, which pauses the hub and so every stream,
    # walks only what came later (bench/fanout_bench.py: -1.5 us per delivery at 1,000 streams).
    gc.collect()
    gc.freeze()
    worker.wsgi.extensions["ingest_jobs"].serve()  # stopped watches go on; waiting sessions get their turns

    gevent.spawn(_return_freed_memory)

    def watch() -> None:
        while worker.alive:
            gevent.sleep(0.2)
        shutdown(worker.wsgi)

    worker.ingest_shutdown = gevent.spawn(watch)


#: Seconds between two returns of freed heap memory to the OS (glibc's malloc_trim, ~0.1 ms each).
_TRIM_EVERY = 10.0


def _return_freed_memory() -> None:
    """Give the heap pages a burst left free back to the OS, every ``_TRIM_EVERY`` seconds.

    glibc keeps freed memory for reuse: after a flood of 1,000 slow connections the worker stayed
    30-40 MiB above its level before, growing by 10-26 MiB a flood; with this it returns to that
    level after each one (bench/slow_clients_bench.py --rounds 2, docs/benchmarks.md section 14).
    On a libc without ``malloc_trim`` (musl) there is nothing to do.
    """
    import ctypes
    import ctypes.util

    import gevent

    trim = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    while trim is not None:
        gevent.sleep(_TRIM_EVERY)
        trim(0)


def worker_exit(server, worker):
    """Let the shutdown started in ``post_worker_init`` finish before the worker process ends.

    With no connection open, gunicorn's gevent worker returns from its run loop at once; without
    this wait the process could end while a job's last commit (its ``interrupted`` state) is
    under way, leaving the session to the reaper once its lease expires.
    """
    shutting_down = getattr(worker, "ingest_shutdown", None)
    if shutting_down is not None:
        shutting_down.join(timeout=graceful_timeout)
