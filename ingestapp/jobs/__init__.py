"""A session's run: the registry (start, resume, cancel, look up), the job greenlet (scan,
each file through the work tier, counters, events), its state, leases and crash recovery, the
scanner and progress throttling.

Imports: ``core``, ``store``, ``stages``, ``events``, ``work`` and ``catalog``.
"""
