"""gunicorn settings for ingestapp: gevent worker, sized for thousands of open SSE streams.

Every value can be overridden on the command line or with GUNICORN_CMD_ARGS.
"""

import os

bind = os.environ.get("INGEST_BIND", "127.0.0.1:8000")
worker_class = "gevent"
# One worker: the event bus is in-process (blinker), so a stream must be served by the process
# running its job. More workers would need a cross-process bus (scale-out is future work).
workers = 1
# No runtime control socket ($HOME/.gunicorn/gunicorn.ctl by default, shared by every gunicorn
# of the user): it can change the worker count, which this single-worker design must not.
control_socket_disable = True
# Each open SSE stream holds one connection (one greenlet); leave room for 10,000 viewers.
worker_connections = 20000
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


def post_worker_init(worker):
    """Start the work pool's processes; end open streams and interrupt running jobs as soon as
    the worker is asked to stop.

    gunicorn's gevent worker waits up to ``graceful_timeout`` for open connections; an SSE
    stream never finishes on its own, so it is closed here instead (browsers reconnect).
    """
    import gevent

    from ingestapp import shutdown

    worker.wsgi.extensions["ingest_jobs"].pool.start()  # warm before the first ingest

    def watch() -> None:
        while worker.alive:
            gevent.sleep(0.2)
        shutdown(worker.wsgi)

    gevent.spawn(watch)
