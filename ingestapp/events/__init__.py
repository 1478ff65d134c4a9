"""The event path: the event model (``model``: born by ``Job.emit`` only), the durable log
(``log``: stored), the bus between processes (``bus``: in-process blinker signal or Redis Streams),
the per-client fan-out (``broker``) and the SSE response (``sse``: where an event leaves).

Imports: ``core`` and ``store``. It knows nothing of jobs: a stream reads a session through the
``sse.SessionSource`` protocol, which the job registry fulfils.
"""
