"""Stage "identify": size, SHA-256 and the real media type, detected from content.

Fills ``size_bytes``, ``sha256``, ``mime_type``, ``width`` and ``height`` (pixels as the decoder
delivers them, before any EXIF orientation is applied) and sets ``ctx.cache["kind"]`` to
``"image"`` or ``"video"``. The extension is never trusted: a text file named ``.jpg`` fails.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import av
import av.error
from PIL import Image

from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.media import IMAGE_ERRORS, IMAGE_FORMATS

NAME = "identify"

_CHUNK = 1 << 20  # 1 MiB reads keep memory flat for multi-GB videos

#: FFmpeg demuxers accepted as video containers, with the MIME type used when the extension
#: does not tell the flavour apart (image demuxers such as ``image2`` are deliberately absent:
#: FFmpeg "opens" any file named ``.jpg`` with them).
_VIDEO_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "video/mp4",
    "matroska,webm": "video/x-matroska",
    "avi": "video/x-msvideo",
}
_VIDEO_MIME_BY_EXTENSION = {
    ".mp4": ("mov,mp4,m4a,3gp,3g2,mj2", "video/mp4"),
    ".m4v": ("mov,mp4,m4a,3gp,3g2,mj2", "video/mp4"),
    ".mov": ("mov,mp4,m4a,3gp,3g2,mj2", "video/quicktime"),
    ".mkv": ("matroska,webm", "video/x-matroska"),
    ".webm": ("matroska,webm", "video/webm"),
    ".avi": ("avi", "video/x-msvideo"),
}


def run(ctx: FileContext) -> None:
    """Fill size, hash, MIME type and dimensions; raise StageError for unusable files."""
    ctx.item["size_bytes"] = file_size(ctx.media())
    if ctx.item["size_bytes"] == 0:
        raise StageError("empty file (0 bytes)")
    ctx.item["sha256"] = sha256_file(ctx.media())
    image = _probe_image(ctx.media())
    detected = ("image", *image) if image else _probe_video(ctx.media(), ctx.path.suffix)
    if detected is None:
        raise StageError("unsupported or corrupt file: not a recognised image or video")
    ctx.cache["kind"], ctx.item["mime_type"], ctx.item["width"], ctx.item["height"] = detected


def file_size(path: str | Path) -> int:
    """Size in bytes of a regular file; StageError if missing, unreadable or not a file."""
    try:
        info = os.stat(path)
    except PermissionError:
        raise StageError("permission denied") from None
    except FileNotFoundError:
        raise StageError("file not found (deleted or moved during the ingest?)") from None
    if not stat.S_ISREG(info.st_mode):
        raise StageError("not a regular file")
    return info.st_size


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as f:
            while count := f.readinto(buffer):
                digest.update(view[:count])
    except PermissionError:
        raise StageError("permission denied") from None
    return digest.hexdigest()


def _probe_image(path: str | Path) -> tuple[str, int, int] | None:
    """(MIME type, width, height) if Pillow recognises the content, else None."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as im:
            image_format, (width, height) = im.format, im.size
    except PermissionError:
        raise StageError("permission denied") from None
    except Image.DecompressionBombError:
        # Pillow refuses before telling the size; its limit is twice MAX_IMAGE_PIXELS.
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise StageError(
            f"image too large: more than {limit} pixels exceeds the decompression-bomb limit"
        ) from None
    except IMAGE_ERRORS:
        return None
    if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
        message = f"image too large: {width}×{height} pixels exceeds the decompression-bomb limit"  # noqa: RUF001
        raise StageError(message)
    return _image_mime(image_format), width, height


def _image_mime(image_format: str | None) -> str:
    if image_format == "MPO":
        return "image/jpeg"  # multi-picture JPEG (CIPA DC-007): the first picture is a plain JPEG
    return Image.MIME.get(image_format or "", f"image/{(image_format or 'unknown').lower()}")


def _probe_video(path: str | Path, suffix: str) -> tuple[str, str, int, int] | None:
    """("video", MIME type, width, height) for a video container FFmpeg can demux, else None;
    ``suffix``, the file name's extension, tells flavours of one container apart."""
    try:
        with av.open(str(path)) as container:
            family = container.format.name
            if family not in _VIDEO_CONTAINERS or not container.streams.video:
                return None
            codec = container.streams.video[0].codec_context
            width, height = codec.width, codec.height
    except av.error.PermissionError:
        raise StageError("permission denied") from None
    except av.error.FFmpegError:
        return None
    if not width or not height:
        return None
    return "video", _video_mime(suffix, family), width, height


def _video_mime(suffix: str, family: str) -> str:
    expected_family, mime = _VIDEO_MIME_BY_EXTENSION.get(suffix.lower(), ("", ""))
    return mime if expected_family == family else _VIDEO_CONTAINERS[family]
