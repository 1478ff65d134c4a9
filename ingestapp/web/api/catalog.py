"""The catalog: search, keyword suggestions, and thumbnails (by item id)."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request, send_from_directory
from sqlalchemy import select

from ingestapp.accounts.auth import item_visible
from ingestapp.catalog.search import keyword_suggestions, query_catalog
from ingestapp.core.errors import ApiError
from ingestapp.store.db import off_hub
from ingestapp.store.models import Item
from ingestapp.web.api.blueprint import bp, registry
from ingestapp.web.contract import responses, spec
from ingestapp.web.schemas.requests import CatalogQueryIn, KeywordsQuery
from ingestapp.web.schemas.responses import CatalogPage, KeywordList


@bp.get("/api/ingest/items/<item_id>/thumbnail")
@spec.validate(resp=responses(404, HTTP_200=None), tags=["catalog"])
def thumbnail(item_id: str) -> Response:
    """The item's thumbnail, looked up by id (never by a path from the request); 404 for another
    user's item unless it is in the shared catalog."""
    if not item_visible(item_id):
        raise ApiError(404, "no thumbnail for this item", "item_id")
    with registry().engine.connect() as conn:
        fields = conn.scalar(select(Item.fields).where(Item.id == item_id))
    if not fields or not fields.get("thumbnail"):
        raise ApiError(404, "no thumbnail for this item", "item_id")
    response = send_from_directory(registry().thumbnail_dir, fields["thumbnail"], max_age=31536000)
    response.headers["Cache-Control"] += ", immutable"  # the name is the content hash
    return response


@bp.get("/api/catalog")
@spec.validate(query=CatalogQueryIn, resp=responses(400, HTTP_200=CatalogPage), tags=["catalog"])
def catalog() -> Response:
    """Catalog search: ``q`` (terms matched in path, keywords, camera, lens), ``keyword``,
    ``min_rating`` (-1 to 5), ``nsfw``, ``has_gps`` (true/false), ``media_type`` (image/video),
    ``taken_from``/``taken_to`` (YYYY-MM-DD), ``sort`` (added, taken, rating, score), ``similar_to``
    (a catalog entry id: the entries within ``INGEST_SIMILAR_DISTANCE`` bits of its hash)."""
    query: CatalogQueryIn = request.context.query
    distance = current_app.config["SIMILAR_DISTANCE"]
    page = off_hub(query_catalog, registry().engine, query.catalog_query(), query.offset, query.limit, distance)
    return jsonify(page)


@bp.get("/api/catalog/keywords")
@spec.validate(query=KeywordsQuery, resp=responses(400, HTTP_200=KeywordList), tags=["catalog"])
def catalog_keywords() -> Response:
    """Keyword suggestions: ``{"keywords": [...]}`` starting with ``prefix``, most used first."""
    return jsonify(keywords=off_hub(keyword_suggestions, registry().engine, request.context.query.prefix.strip()))
