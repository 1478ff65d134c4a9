"""What every pipeline stage receives and may raise.

A stage module exposes ``NAME`` (its name in the session state) and ``run(ctx: FileContext) ->
None``. ``run`` executes in a gevent threadpool thread: it may block and burn CPU, but must not
touch gevent objects, the database or the event bus. It fills ``ctx.item`` and raises on failure;
the job turns the exception into an error entry ``{file, stage, message, time}`` and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..parameters import IngestParameters


class StageError(Exception):
    """A file cannot be handled by a stage; the message is shown to the user as is."""


@dataclass
class FileContext:
    """One file travelling through the stages.

    Attributes:
        path: absolute, resolved path of the media file.
        relpath: path relative to its media root, POSIX separators (what the user sees).
        parameters: the session's validated parameters (``nsfw_threshold`` etc.).
        thumbnail_dir: directory where thumbnails are stored, keyed by content hash.
        item: the result fields, filled in by the stages (see ``new_item_fields``).
        cache: scratch space shared by the stages of this one file, e.g. ``"preview"`` (a
            reduced, orientation-corrected RGB ``PIL.Image``) or ``"xmp"`` (parsed XMP).
    """

    path: Path
    relpath: str
    parameters: IngestParameters
    thumbnail_dir: Path
    item: dict[str, Any] = field(default_factory=lambda: new_item_fields())
    cache: dict[str, Any] = field(default_factory=dict)


def new_item_fields() -> dict[str, Any]:
    """The result fields of an item before any stage ran (the ``Item`` shape of the API)."""
    return {
        "size_bytes": None,
        "mime_type": None,
        "sha256": None,
        "width": None,
        "height": None,
        "metadata": {
            "make": None,
            "model": None,
            "lens_model": None,
            "datetime_original": None,
            "exposure_time_s": None,
            "f_number": None,
            "iso": None,
            "focal_length_mm": None,
            "orientation": None,
            "gps": None,
            "duration_s": None,
            "video_codec": None,
            "fps": None,
        },
        "keywords": [],
        "rating": None,
        "score": None,
        "score_source": None,
        "nsfw_score": None,
        "nsfw": None,
        "thumbnail": None,
    }
