"""The words and rules every other part shares: the vocabulary (statuses, event types, stage
names, parameter names), unguessable ids, the job errors, media-root confinement and the display
form of byte names, glob patterns, the validated ingest parameters, the configuration and the
Prometheus counters.

Imports: the standard library and small pure libraries only (wcmatch, prometheus_client) — no
Flask, no SQLAlchemy, nothing else of ``ingestapp``. Everything may import it.
"""
