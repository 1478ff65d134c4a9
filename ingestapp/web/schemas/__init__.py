"""The API's contract as Pydantic v2 models: ``requests`` (query strings and JSON bodies, validated
once, on the way in), ``responses`` (what the routes answer) and ``events`` (the ``data`` of each
SSE event type).

``contract.py`` builds the OpenAPI 3.1 document from these models (through spectree), the API
validates requests with them, and the tests validate real responses and every emitted event
against them. Model names end in ``In``/``Out`` where a table or a dataclass has the plain name
(``ItemOut`` and the table ``Item``, ``CatalogQueryIn`` and the dataclass ``CatalogQuery``).
"""
