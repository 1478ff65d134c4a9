"""Stage "thumbnail": a small upright JPEG per distinct content, stored by SHA-256.

The thumbnail lives at ``thumbnail_dir / sha256[:2] / f"{sha256}.jpg"`` (two-character fan-out
keeps directories small); identical files share one thumbnail, and an existing one is reused
without decoding the media again. Files are written to a temporary name in the same directory
and renamed into place (``os.replace`` is atomic on POSIX), so readers never see a partial JPEG.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image

from ingestapp.stages import similar
from ingestapp.stages.base import FileContext
from ingestapp.stages.identify import sha256_file
from ingestapp.stages.media import THUMBNAIL_SIZE, preview

NAME = "thumbnail"

__all__ = ["JPEG_QUALITY", "NAME", "THUMBNAIL_SIZE", "discard", "run", "thumbnail_relpath", "write_jpeg_atomically"]
JPEG_QUALITY = 80


def run(ctx: FileContext) -> None:
    """Create the thumbnail if missing and set ``ctx.item["thumbnail"]`` (path relative to the dir)."""
    digest = ctx.item["sha256"] or sha256_file(ctx.media())
    relative = thumbnail_relpath(digest)
    target = ctx.thumbnail_dir / relative
    if not target.is_file():
        image = preview(ctx).copy()  # the preview is shared with other stages: don't shrink it
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
        write_jpeg_atomically(image, target)
        ctx.cache["thumbnail_written"] = target  # so ``discard`` can take it back
    ctx.item["thumbnail"] = relative
    similar.run(ctx, target)  # the perceptual hash and sharpness (issue 19)


def discard(ctx: FileContext) -> None:
    """Forget what this file's stages made of a content that changed under them: its hash, and the
    thumbnail this run wrote (thumbnails are shared by hash: a later file with the old content
    would show the new picture)."""
    written = ctx.cache.pop("thumbnail_written", None)
    if written is not None:
        written.unlink(missing_ok=True)
    ctx.item.update(sha256=None, thumbnail=None)


def thumbnail_relpath(sha256: str) -> str:
    """``"ab/abcd….jpg"``: where the thumbnail of content ``sha256`` lives under thumbnail_dir."""
    return f"{sha256[:2]}/{sha256}.jpg"


def write_jpeg_atomically(image: Image.Image, target: Path) -> None:
    """Encode ``image`` as JPEG to a temporary file next to ``target``, then rename it over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".tmp", prefix=f".{target.stem[:16]}.", dir=target.parent)
    temporary = Path(name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; thumbnails are as readable as other files
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
