"""Stage "identify": size, SHA-256 and the real media type, detected from content.

Fills ``size_bytes``, ``sha256``, ``mime_type``, ``width`` and ``height`` (pixels as the decoder
delivers them, before any EXIF orientation is applied) and sets ``ctx.cache["kind"]`` to
``"image"`` or ``"video"`` and ``ctx.cache["reader"]`` to the ``core.formats.Reader`` used. The
extension is never trusted: a text file named ``.jpg`` fails, and so does a JPEG named ``.cr2``.
Camera RAW extensions (``core.formats``) are checked with exiv2/LibRaw and typed by the format
table; a RAW format no reader understands (Sigma X3F) is typed by its extension and fails in words.

Images are decoded here, once (the preview the later stages share, ``media.preview``), so a file
that cannot be decoded fails in this stage with "cannot decode the image: ..." (issue 18) rather
than in whichever later stage first needs its pixels; what its header says (EXIF) is still read
when the session extracts metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

import av
import av.error
from PIL import Image

from ingestapp.core.formats import Format, Reader, format_of
from ingestapp.stages import metadata
from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.media import IMAGE_ERRORS, IMAGE_FORMATS, preview
from ingestapp.stages.raw import check_raw

NAME = "identify"

_CHUNK = 1 << 20  # 1 MiB reads keep memory flat for multi-GB videos

#: FFmpeg demuxers accepted as video containers, with the MIME type used when the extension
#: does not tell the flavour apart (image demuxers such as ``image2`` are deliberately absent:
#: FFmpeg "opens" any file named ``.jpg`` with them).
_VIDEO_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "video/mp4",
    "matroska,webm": "video/x-matroska",
    "avi": "video/x-msvideo",
    "mpegts": "video/m2ts",
    "mpeg": "video/mpeg",
    "asf": "video/x-ms-wmv",
}
#: The demuxer each video MIME type of the format table (``core.formats``) is read by.
_CONTAINER_OF_MIME = {
    "video/mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "video/quicktime": "mov,mp4,m4a,3gp,3g2,mj2",
    "video/3gpp": "mov,mp4,m4a,3gp,3g2,mj2",
    "video/x-matroska": "matroska,webm",
    "video/webm": "matroska,webm",
    "video/x-msvideo": "avi",
    "video/m2ts": "mpegts",
    "video/mpeg": "mpeg",
    "video/x-ms-wmv": "asf",
}


def run(ctx: FileContext) -> None:
    """Fill size, hash, MIME type and dimensions; raise StageError for unusable files."""
    ctx.item["size_bytes"] = file_size(ctx.media())
    if ctx.item["size_bytes"] == 0:
        raise StageError("empty file (0 bytes)")
    ctx.item["sha256"] = sha256_file(ctx.media())
    fmt = format_of(ctx.path.name)
    if fmt is not None and fmt.reader in (Reader.RAW, Reader.NONE):
        _identify_raw(ctx, fmt)
    else:
        image = _probe_image(ctx.media())
        detected = ("image", *image) if image else _probe_video(ctx.media(), ctx.path.name)
        if detected is None:
            raise StageError("unsupported or corrupt file: not a recognised image or video")
        ctx.cache["kind"], ctx.item["mime_type"], ctx.item["width"], ctx.item["height"] = detected
        ctx.cache["reader"] = Reader.PILLOW if image else Reader.VIDEO
    if ctx.cache["kind"] == "image":
        _decode(ctx)


def _identify_raw(ctx: FileContext, fmt: Format) -> None:
    """Type a RAW file by its extension once its content is checked (``raw.check_raw``)."""
    ctx.cache["kind"], ctx.cache["reader"] = "image", fmt.reader
    if fmt.reader == Reader.NONE:
        ctx.item["mime_type"] = fmt.mime_type
        raise StageError(f"{fmt.name} files cannot be read: no installed reader understands this RAW format")
    width, height, ctx.cache["exiv2"] = check_raw(ctx.media(), fmt)
    ctx.item["mime_type"], ctx.item["width"], ctx.item["height"] = fmt.mime_type, width or None, height or None


def _decode(ctx: FileContext) -> None:
    """Decode the shared preview now; on failure, read the header's metadata, then fail."""
    try:
        preview(ctx)
    except StageError:
        if ctx.parameters.extract_metadata:
            with contextlib.suppress(StageError):  # the decode failure is the error to report
                metadata.run(ctx)
        raise


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


def _probe_video(path: str | Path, name: str) -> tuple[str, str, int, int] | None:
    """("video", MIME type, width, height) for a video container FFmpeg can demux, else None;
    ``name``, the file's name, tells flavours of one container apart by its extension."""
    try:
        with av.open(str(path)) as container:
            family = container.format.name
            if family not in _VIDEO_CONTAINERS or not container.streams.video:
                return None
            codec = container.streams.video[0].codec_context
            if codec is None:
                return None  # a stream FFmpeg has no decoder for (e.g. a CR3's CRAW track)
            width, height = codec.width, codec.height
    except av.error.PermissionError:
        raise StageError("permission denied") from None
    except av.error.FFmpegError:
        return None
    if not width or not height:
        return None
    return "video", _video_mime(name, family), width, height


def _video_mime(name: str, family: str) -> str:
    fmt = format_of(name)
    if fmt is not None and _CONTAINER_OF_MIME.get(fmt.mime_type) == family:
        return fmt.mime_type
    return _VIDEO_CONTAINERS[family]
