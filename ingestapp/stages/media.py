"""Decoding helpers shared by the stages: opening images, the preview image, video frames.

Everything here runs inside a worker process (see ``base``): plain blocking calls into Pillow,
pillow-heif and PyAV, no shared mutable state. Decoding failures become
:class:`StageError` with a human message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
import pillow_heif
import pillow_jxl  # noqa: F401  (registers the JPEG XL plugin with Pillow on import)
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ingestapp.core.formats import Reader, format_of
from ingestapp.core.parameters import IngestParameters
from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.raw import raw_preview

# HEIC/HEIF support for Image.open; libheif applies the container's rotation (irot/imir) while
# decoding and pillow-heif resets the EXIF orientation to 1, so HEIF pixels are already upright.
pillow_heif.register_heif_opener()

#: Pillow formats the pipeline accepts (the ``pillow`` readers of ``core.formats``). Limiting
#: ``Image.open`` to these keeps exotic decoders (and their attack surface) out, and stops
#: formats without a magic number (e.g. TGA) from claiming arbitrary files. (Multi-picture JPEGs
#: open through the JPEG entry and report format "MPO".)
IMAGE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "HEIF", "AVIF", "JXL", "GIF", "BMP")

#: Long side, in pixels, of the cached preview image when the NSFW stage needs it.
PREVIEW_SIZE = 1024
#: Longest side of a thumbnail, in pixels: the preview size of a run without NSFW detection, and
#: the least size an embedded RAW preview must have to stand in for the RAW's pixels.
THUMBNAIL_SIZE = 320

#: Exceptions Pillow raises for undecodable or truncated image data.
IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
)

_MID_GRAY = 128
_TRANSPOSE_CCW = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def open_image(path: str | Path) -> ImageFile.ImageFile:
    """Open ``path`` lazily (header only) with one of :data:`IMAGE_FORMATS`.

    Raises:
        StageError: the file is not readable or not an image Pillow can identify.
        PIL.Image.DecompressionBombError: the header announces more than twice
            ``Image.MAX_IMAGE_PIXELS`` pixels (let through so callers can word it).
    """
    try:
        return Image.open(path, formats=IMAGE_FORMATS)
    except PermissionError:
        raise StageError("permission denied") from None
    except IMAGE_ERRORS as exc:
        raise StageError(f"corrupt or unsupported image: {exc}") from None


def kind(ctx: FileContext) -> str:
    """``"image"`` or ``"video"``: what identify detected, else a guess from the extension."""
    detected = ctx.cache.get("kind")
    if detected in ("image", "video"):
        return str(detected)
    fmt = format_of(ctx.path.name)
    return fmt.kind if fmt is not None else "image"


def is_raw(ctx: FileContext) -> bool:
    """Whether the file is read as camera RAW (exiv2 + LibRaw): identify's verdict, else the extension's."""
    detected = ctx.cache.get("reader")
    if detected is not None:
        return detected == Reader.RAW
    fmt = format_of(ctx.path.name)
    return fmt is not None and fmt.reader == Reader.RAW


def preview_size(parameters: IngestParameters) -> int:
    """The long side the preview needs: :data:`PREVIEW_SIZE` for NSFW detection, else the thumbnail's."""
    return PREVIEW_SIZE if parameters.enable_nsfw_detection else THUMBNAIL_SIZE


def preview(ctx: FileContext) -> Image.Image:
    """The file as an upright RGB image, long side at most :func:`preview_size` px (the smallest
    size the session's stages need: 1024 px with NSFW detection, else the thumbnail's 320 px).

    Images are decoded with JPEG DCT scaling (``Image.draft``) when possible, then rotated by
    their EXIF orientation; camera RAW files come from their largest embedded preview of at
    least :data:`THUMBNAIL_SIZE` px, else from a half-size LibRaw demosaic (``raw.raw_preview``);
    videos yield the frame about 10 % into the clip, rotated by the stream's display matrix. The
    result is cached in ``ctx.cache["preview"]``; treat it as read-only (copy before modifying).

    Raises:
        StageError: "cannot decode the image: ..." or "corrupt or unreadable video: ...".
    """
    cached = ctx.cache.get("preview")
    if isinstance(cached, Image.Image):
        return cached
    size = preview_size(ctx.parameters)
    if kind(ctx) == "video":
        image = video_frames(ctx.media(), [0.1])[0]
        image.thumbnail((size, size), Image.Resampling.BILINEAR)
    elif is_raw(ctx):
        try:
            image = raw_preview(ctx.media(), size, THUMBNAIL_SIZE, ctx.cache.get("exiv2"))
        except StageError as exc:
            raise StageError(f"cannot decode the image: {exc}") from None
    else:
        image = _image_preview(ctx.media(), size)
    ctx.cache["preview"] = image
    return image


def _image_preview(path: str | Path, size: int) -> Image.Image:
    try:
        with open_image(path) as im:
            # For JPEG, decode at 1/2..1/8 scale straight from the DCT (a no-op for other formats).
            im.draft("RGB", fitted(im.size, size))
            im.load()
            if _jpeg_scan_truncated(im, path):
                raise StageError("cannot decode the image: the JPEG scan data ends prematurely")
            # Pillow's thumbnail() reduces large images with Image.reduce, which has no 16-bit
            # modes ("image has wrong mode" past about 4,096 px): scale to 8 bits first.
            image = _eight_bit(im) if im.mode in HIGH_BIT_MODES else im
            image.thumbnail((size, size), Image.Resampling.BILINEAR)
            return to_rgb(_upright(image))
    except Image.DecompressionBombError as exc:
        raise StageError(f"image too large: {exc}") from None
    except IMAGE_ERRORS as exc:
        raise StageError(f"cannot decode the image: {exc}") from None


def fitted(dimensions: tuple[int, int], size: int) -> tuple[int, int]:
    """``dimensions`` scaled to a long side of ``size`` px, aspect kept: the box to ask ``draft``
    for (it picks the smallest DCT scale at least that large; a square box would ask for more)."""
    width, height = dimensions
    factor = size / max(width, height, 1)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; unreadable EXIF means "leave as stored", not a failure."""
    try:
        return ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, KeyError, TypeError, struct.error):
        return im


#: Pillow's grayscale modes with more than 8 bits a sample (scans, astro and medical exports).
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _eight_bit(im: Image.Image) -> Image.Image:
    """A high-bit grayscale image as mode L: 0..65535 scaled to 0..255 (Pillow's convert clips at
    255 instead, which turns most 16-bit pictures white)."""
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) / 257.0, 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is flattened onto white, 16-bit is scaled."""
    if im.mode == "RGB":
        return im
    if im.mode in HIGH_BIT_MODES:
        return _eight_bit(im).convert("RGB")
    if "A" in im.getbands() or "transparency" in im.info:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def _jpeg_scan_truncated(im: Image.Image, path: str | Path) -> bool:
    """Whether a baseline JPEG's entropy-coded data ran out before the last MCU.

    libjpeg only *warns* when the scan ends early (e.g. an EOI marker in the middle of the
    data), and Pillow discards warnings: the missing MCUs come out as all-zero coefficients,
    i.e. exactly mid-gray. The last MCU (bottom-right pixel) is therefore mid-gray in every
    truncated file; as that is cheap but not conclusive, FFmpeg's MJPEG decoder, run with
    ``err_detect=explode`` at 1/8 scale, confirms it.
    """
    if im.format not in ("JPEG", "MPO") or im.width == 0 or im.height == 0:
        return False
    corner = im.getpixel((im.width - 1, im.height - 1))
    bands = corner if isinstance(corner, tuple) else (corner,)
    if any(value != _MID_GRAY for value in bands):
        return False
    return _ffmpeg_rejects_jpeg(path)


def _ffmpeg_rejects_jpeg(path: str | Path) -> bool:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = {"err_detect": "explode", "lowres": "3"}
            for _frame in container.decode(stream):
                pass
    except av.error.InvalidDataError:
        return True
    except (av.error.FFmpegError, IndexError):
        return False  # FFmpeg cannot judge this file (e.g. unsupported coding); trust libjpeg
    return False


def video_frames(path: str | Path, positions: Sequence[float]) -> list[Image.Image]:
    """Decode one upright RGB frame at each position, a fraction (0.0-1.0) of the duration.

    Each frame is the first one at or after the requested time (seeking to the preceding
    keyframe first). When the duration is unknown, the first frame stands in for every position.

    Raises:
        StageError: the file cannot be demuxed or no frame decodes.
    """
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            duration = video_duration_s(container)
            frames = [_frame_at(container, stream, (duration or 0.0) * p) for p in positions]
    except (av.error.FFmpegError, IndexError) as exc:
        raise StageError(f"corrupt or unreadable video: {exc}") from None
    if any(frame is None for frame in frames):
        raise StageError("corrupt or unreadable video: no frame could be decoded")
    return [frame for frame in frames if frame is not None]


def video_duration_s(container: av.container.InputContainer) -> float | None:
    """Duration in seconds from the container, else from the first video stream; None if unknown."""
    if container.duration:
        return container.duration / av.time_base
    stream = container.streams.video[0] if container.streams.video else None
    if stream is not None and stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def _frame_at(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, seconds: float
) -> Image.Image | None:
    time_base = stream.time_base or Fraction(1, av.time_base)
    start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
    target = start + seconds
    if seconds > 0:
        container.seek(int(target / time_base), stream=stream, backward=True)
    last = None
    for frame in container.decode(stream):
        last = frame
        if frame.time is None or frame.time >= target - 1e-3:
            break
    if last is None:
        return None
    return rotate_ccw(last.to_image(), last.rotation)


def rotate_ccw(image: Image.Image, degrees: float) -> Image.Image:
    """Rotate by a display-matrix angle (counter-clockwise degrees, multiples of 90 only)."""
    method = _TRANSPOSE_CCW.get(round(degrees) % 360)
    return image.transpose(method) if method is not None else image
