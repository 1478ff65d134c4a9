"""The JSON API: one blueprint, ``api`` (``blueprint.py``: credentials, the state-change guard),
with its routes by resource: ``sessions`` (start, state, cancel, resume, the live stream),
``review`` (items, exclusions, commit), ``catalog`` (search, keywords, thumbnails),
``directories`` (media roots, browse), ``server`` (stream metrics) and ``similar`` (similar
pictures of a session).

Errors are JSON ``{"error", "field"}`` (``web/errors.py``). Request and response shapes are the
models of ``web/schemas/``, declared on each route with ``spec.validate`` (``contract.py``), which
validates each request once and hands the validated model to the route.
"""

# The resource modules add their routes to ``bp`` when imported.
from ingestapp.web.api import catalog, directories, review, server, sessions, similar
from ingestapp.web.api.blueprint import bp

__all__ = ["bp", "catalog", "directories", "review", "server", "sessions", "similar"]
