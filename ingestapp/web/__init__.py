"""The HTTP surface: JSON errors (``errors``), the request body (``body``), the API blueprints,
the OpenAPI contract and its schemas (``contract``, ``schemas``), the pages and ``/metrics``.

Imports: every part below it (``jobs``, ``catalog``, ``accounts``, ``events``, ``store``, ``core``);
nothing imports it but the factory.
"""
