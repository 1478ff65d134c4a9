"""The directory picker: the media roots, and the subdirectories of a directory inside one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Response, jsonify, request

from ingestapp.core.errors import ApiError
from ingestapp.core.parameters import MEDIA_EXTENSIONS
from ingestapp.core.paths import display_path, path_error
from ingestapp.web.api.blueprint import bp, registry
from ingestapp.web.contract import responses, spec
from ingestapp.web.schemas.requests import BrowseQuery
from ingestapp.web.schemas.responses import Listing, RootList


@bp.get("/api/ingest/roots")
@spec.validate(resp=responses(HTTP_200=RootList), tags=["directories"])
def roots() -> Response:
    return jsonify(roots=[{"name": root.name or str(root), "path": str(root)} for root in registry().media_roots])


@bp.get("/api/ingest/browse")
@spec.validate(query=BrowseQuery, resp=responses(400, 403, 404, HTTP_200=Listing), tags=["directories"])
def browse() -> Response:
    """Subdirectories of ``path`` (inside a media root): ``{"path", "parent", "directories"}``.

    ``directories`` are ``{name (display form), path (lossless), media_count}``; 400 for a path
    that is relative, too long, a symlink loop or holds a NUL byte; 403 for one outside the media
    roots (symlinks resolved) or unreadable; 404 when it is not a directory.
    """
    directory = Path(request.context.query.path)  # resolved and confined by BrowseQuery
    try:
        directories = registry().threadpool.apply(_subdirectories, (directory,))
    except PermissionError:
        raise ApiError(403, "permission denied", "path") from None
    except (FileNotFoundError, NotADirectoryError):
        raise ApiError(404, "no such directory", "path") from None
    except OSError as exc:
        raise ApiError(400, path_error(exc), "path") from None
    parent = directory.parent if directory not in registry().media_roots else None
    return jsonify(path=str(directory), parent=str(parent) if parent else None, directories=directories)


def _subdirectories(directory: Path) -> list[dict[str, Any]]:
    """``[{"name", "path", "media_count"}]``: the visible subfolders of ``directory`` and how many
    media files (by extension) each holds directly. Runs in the threadpool (one listing each)."""
    with os.scandir(directory) as entries:
        subdirectories = sorted((e for e in entries if not e.name.startswith(".") and _is_directory(e)),
                                key=lambda e: e.name)
    listing = []
    for entry in subdirectories:
        try:
            with os.scandir(entry.path) as files:
                count = sum(1 for f in files if f.name.lower().endswith(MEDIA_EXTENSIONS) and f.is_file())
        except OSError:
            count = None
        listing.append({"name": display_path(entry.name), "path": str(directory / entry.name), "media_count": count})
    return listing


def _is_directory(entry: os.DirEntry) -> bool:
    """A directory, or a link to one (a broken or looping link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False
