"""The review of a session: its items by view, the counts, the exclusions, and the commit (each
read or written off the gevent hub: a session may hold 100,000 items)."""

from __future__ import annotations

from flask import Response, jsonify, request

from ingestapp.accounts.auth import check_session_access
from ingestapp.catalog.commit import commit_session
from ingestapp.catalog.review import session_items, session_review, set_excluded
from ingestapp.core.errors import JobConflict
from ingestapp.core.vocabulary import PairImport, SessionStatus
from ingestapp.events.sse import is_finished
from ingestapp.store.db import off_hub
from ingestapp.web.api.blueprint import bp, registry
from ingestapp.web.contract import responses, spec
from ingestapp.web.schemas.requests import CommitRequest, ExclusionsRequest, ItemsQuery
from ingestapp.web.schemas.responses import CommitResult, ItemPage, Review


@bp.get("/api/ingest/<session_id>/items")
@spec.validate(query=ItemsQuery, resp=responses(400, 404, HTTP_200=ItemPage), tags=["sessions"])
def items(session_id: str) -> Response:
    """A page of the session's items, ``view`` = all | new | duplicates | errors | nsfw."""
    check_session_access(session_id)  # 404 for an unknown session or another user's
    page: ItemsQuery = request.context.query
    return jsonify(off_hub(session_items, registry().engine, session_id, page.offset, page.limit, page.view))


@bp.get("/api/ingest/<session_id>/review")
@spec.validate(resp=responses(404, HTTP_200=Review), tags=["sessions"])
def review(session_id: str) -> Response:
    """The review step: ``{"counts", "pairs", "excluded", "import_count", "imported", "import_offered"}``."""
    check_session_access(session_id)  # 404 for an unknown session or another user's
    return jsonify(off_hub(session_review, registry().engine, session_id))


@bp.post("/api/ingest/<session_id>/exclusions")
@spec.validate(json=ExclusionsRequest, resp=responses(400, 403, 404, 415, HTTP_200=Review), tags=["sessions"])
def exclusions(session_id: str) -> Response:
    """Exclude items from the import (``"excluded": true``) or include them again, by ``ids`` or
    by ``view`` (every ok item of that review filter). Answers with the review, as ``/review``."""
    body = request.context.json.root
    check_session_access(session_id)  # 404 for an unknown session or another user's
    ids, view = getattr(body, "ids", None), getattr(body, "view", None)
    off_hub(set_excluded, registry().engine, session_id, body.excluded, ids, view)
    return jsonify(off_hub(session_review, registry().engine, session_id))


@bp.post("/api/ingest/<session_id>/commit")
@spec.validate(json=CommitRequest, resp=responses(400, 403, 404, 409, 415, HTTP_200=CommitResult),
               tags=["sessions"])
def commit(session_id: str) -> Response:
    """Write the session's ok items that are not excluded into the catalog:
    ``{"added", "updated", "excluded"}``. An ``exclude`` list replaces the stored exclusions;
    ``pairs`` (``both``, ``raw``, ``jpeg``) takes both items of each RAW+JPEG pair, or one."""
    exclude, pairs = request.context.json.exclude, PairImport(request.context.json.pairs)
    check_session_access(session_id)
    state = registry().state(session_id)
    if not is_finished(state) and state["status"] not in (SessionStatus.INTERRUPTED, SessionStatus.WATCHING):
        raise JobConflict(f"the session is still {state['status']}")
    exclude = None if exclude is None else set(exclude)
    return jsonify(off_hub(commit_session, registry().engine, session_id, exclude, pairs))
