"""The database: the engine (``db``), the tables (``models``), the schema revision check
(``revision``) and the Alembic migrations (``migrations/``).

Imports: ``core`` only. Imported by every part above it (``events``, ``catalog``, ``accounts``,
``jobs``, ``web``, ``cli``); never by ``stages`` or ``work``, which run in processes without a
database.
"""
