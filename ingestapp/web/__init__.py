"""The HTTP surface: JSON errors (``errors``), the request body (``body``), the API (``api/``: one
blueprint, routes by resource), the OpenAPI contract and its models (``contract``, ``schemas/``),
the pages and ``/metrics``.

Imports: every part below it (``jobs``, ``catalog``, ``accounts``, ``events``, ``store``, ``core``);
nothing imports it but the factory.
"""
