"""A session's run: the registry (``registry``: start, resume, cancel, look up, where a job runs),
the job greenlet (``job``: scan, each file through its stages with ``filerun``, finish), its state
(``state``), its writer (``writer``: events and group commit), the cancel interface (``cancel``),
what a resume starts from (``recorded``), leases and crash recovery, each user's share of running
sessions (``turns``), the scanner, progress throttling and the session queries.

Imports: ``core``, ``store``, ``stages``, ``events``, ``work`` and ``catalog``.
"""
