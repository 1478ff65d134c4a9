"""Camera RAW files and exiv2: metadata, embedded previews, LibRaw demosaics.

exiv2 (python-exiv2: libexiv2 0.28 with BMFF, so CR3 too) reads the EXIF of RAW files and of any
image Pillow reads incompletely; it also lists the previews a camera embeds in its RAW files.
LibRaw (rawpy) demosaics a RAW when none of them is large enough. Everything here runs in a stage
process (``base``); failures become :class:`StageError` in words, never a library's text alone.

python-exiv2's "easy access" helpers (``exiv2.lensName`` ...) crash the process on some files;
the data are read by iterating ``ExifData`` instead, which is safe.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import exiv2
import rawpy
from PIL import Image

from ingestapp.core.formats import Format
from ingestapp.stages.base import StageError

# exiv2 prints warnings about odd maker notes to stderr: the stage process has no use for them.
exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)

#: exiv2 image types a RAW file's content may have (most RAW formats are TIFF inside; CR3 is BMFF).
RAW_TYPES = frozenset({
    exiv2.ImageType.tiff, exiv2.ImageType.bigtiff, exiv2.ImageType.dng, exiv2.ImageType.nef,
    exiv2.ImageType.pef, exiv2.ImageType.arw, exiv2.ImageType.sr2, exiv2.ImageType.srw,
    exiv2.ImageType.cr2, exiv2.ImageType.crw, exiv2.ImageType.orf, exiv2.ImageType.rw2,
    exiv2.ImageType.raf, exiv2.ImageType.mrw, exiv2.ImageType.bmff,
})

#: EXIF orientation (1-8) -> the Pillow transposition that makes the pixels upright (EXIF 2.32 §4.6.4).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

#: The EXIF keys read (exiv2 names), with the fallbacks cameras use in their maker notes.
EXIF_KEYS = (
    "Exif.Image.Make", "Exif.Image.Model", "Exif.Photo.LensModel", "Exif.Canon.LensModel", "Exif.Image.Orientation",
    "Exif.Photo.DateTimeOriginal", "Exif.Image.DateTimeOriginal", "Exif.Photo.OffsetTimeOriginal",
    "Exif.Image.DateTime", "Exif.Photo.ExposureTime", "Exif.Image.ExposureTime", "Exif.Photo.FNumber",
    "Exif.Image.FNumber", "Exif.Photo.ISOSpeedRatings", "Exif.Image.ISOSpeedRatings", "Exif.Photo.FocalLength",
    "Exif.Image.FocalLength", "Exif.Photo.PixelXDimension", "Exif.Photo.PixelYDimension",
    "Exif.GPSInfo.GPSLatitude", "Exif.GPSInfo.GPSLatitudeRef", "Exif.GPSInfo.GPSLongitude",
    "Exif.GPSInfo.GPSLongitudeRef", "Exif.GPSInfo.GPSAltitude", "Exif.GPSInfo.GPSAltitudeRef",
    "Exif.CanonSi.ISOSpeed", "Exif.Nikon3.ISOSpeed",
)
_WANTED = frozenset(EXIF_KEYS)
#: Maker-note tags whose raw value is a code: exiv2's interpretation (its ``print``) is kept instead
#: (Canon's ShotInfo ISO is stored as an APEX-like code; exiv2 prints the ISO speed).
_PRINTED = frozenset({"Exif.CanonSi.ISOSpeed"})

#: LibRaw's failures, in words (rawpy raises one class per LibRaw error code).
_LIBRAW_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (rawpy.LibRawFileUnsupportedError, "LibRaw does not support this camera's RAW data"),
    (rawpy.LibRawIOError, "the RAW data end early (a truncated file?)"),
    (rawpy.LibRawDataError, "the RAW data are corrupt"),
    (rawpy.LibRawTooBigError, "the RAW image is too large"),
    (rawpy.LibRawUnsufficientMemoryError, "not enough memory to demosaic the RAW image"),
    (rawpy.LibRawRequestForNonexistentImageError, "the file holds no RAW image"),
)


@dataclass(frozen=True)
class Exiv2Reading:
    """What exiv2 read from a file.

    Attributes:
        image_type: exiv2's ``ImageType`` of the content (detected from its bytes, not its name).
        mime_type: exiv2's MIME type for it (``image/tiff`` for TIFF-based RAW such as DNG).
        width, height: pixel dimensions exiv2 reports (the sensor image's for RAW), 0 if unknown.
        exif: the :data:`EXIF_KEYS` present, as Python values (``str``, ``int``, ``Fraction``,
            or a tuple of them for multi-valued tags).
        previews: ``(width, height, MIME type, index)`` of each embedded preview, largest last.
    """

    image_type: int
    mime_type: str
    width: int
    height: int
    exif: dict[str, Any]
    previews: list[tuple[int, int, str, int]]


@contextmanager
def exiv2_image(path: str | Path) -> Iterator[Any]:
    """An opened ``exiv2.Image`` whose metadata has been read.

    Raises:
        StageError: exiv2 does not recognise the content or cannot read its metadata.
    """
    try:
        image = exiv2.ImageFactory.open(str(path))
        image.readMetadata()
    except exiv2.Exiv2Error as exc:
        raise StageError(f"exiv2 cannot read the metadata: {_exiv2_words(exc)}") from None
    yield image


def read_exiv2(path: str | Path) -> Exiv2Reading:
    """Read :class:`Exiv2Reading` from ``path``; StageError as :func:`exiv2_image`."""
    with exiv2_image(path) as image:
        try:
            data = image.exifData()
            exif = {
                datum.key(): datum.print(data) if datum.key() in _PRINTED else _value(datum)
                for datum in data if datum.key() in _WANTED
            }
            previews = [
                (p.width_, p.height_, p.mimeType_, i)
                for i, p in enumerate(exiv2.PreviewManager(image).getPreviewProperties())
            ]
            image_type = int(exiv2.ImageFactory.getType(str(path)))
        except exiv2.Exiv2Error as exc:
            raise StageError(f"exiv2 cannot read the metadata: {_exiv2_words(exc)}") from None
        except (UnicodeDecodeError, ValueError, OverflowError):
            raise StageError("exiv2 cannot read the metadata: a tag holds malformed values") from None
        previews.sort(key=lambda p: p[0] * p[1])
        return Exiv2Reading(image_type, image.mimeType(), image.pixelWidth(), image.pixelHeight(), exif, previews)


def xmp_packet(path: str | Path) -> bytes | None:
    """The XMP packet embedded in a RAW file (exiv2 finds it in TIFF tag 700, CR3 boxes ...); None if
    there is none or exiv2 cannot read the file (the pixels' stage reports that)."""
    try:
        with exiv2_image(path) as image:
            packet = image.xmpPacket()
    except StageError:
        return None
    data = packet.encode("utf-8") if isinstance(packet, str) else bytes(packet or b"")
    return data if data.strip() else None


def _value(datum: Any) -> Any:
    """An exiv2 datum as a Python value: text for ASCII, else numbers (one, or a tuple)."""
    type_name = datum.typeName()
    if type_name in ("Ascii", "Comment", "Undefined", "String"):
        return datum.toString()
    count = datum.count()
    if type_name in ("Rational", "SRational"):
        values: list[Any] = [_fraction(*datum.toRational(i)) for i in range(count)]
    else:
        values = [datum.toInt64(i) for i in range(count)]
    return values[0] if count == 1 else tuple(values)


def _fraction(numerator: int, denominator: int) -> Fraction | None:
    return Fraction(numerator, denominator) if denominator else None


def _exiv2_words(exc: BaseException) -> str:
    # Exiv2Error's args are (ErrorCode, message): the message is plain words ("Failed to read input data").
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    return str(message).rstrip(".").lower() or "unknown exiv2 error"


def check_raw(path: str | Path, fmt: Format) -> tuple[int, int, Exiv2Reading | None]:
    """Check that ``path``'s content is a RAW file as its extension (``fmt``) announces, and return
    its (width, height) in pixels (sensor image, before orientation; 0 when unknown) and exiv2's
    reading (None for a format only LibRaw reads), for the later stages to reuse.

    exiv2 judges first (it must find a TIFF-, BMFF- or vendor-RAW structure); formats exiv2 does
    not read (IIQ, 3FR, MOS ...) are accepted when LibRaw identifies them.

    Raises:
        StageError: the content is another format (the extension lies), or neither exiv2 nor
            LibRaw recognises it (truncated, or not a RAW file).
    """
    try:
        reading = read_exiv2(path)
    except StageError:
        reading = None
    if reading is not None and reading.image_type not in RAW_TYPES:
        raise StageError(
            f"not a {fmt.name} file: the content is {reading.mime_type} (the file's extension is wrong)"
        )
    if reading is not None and reading.width and reading.height:
        return reading.width, reading.height, reading
    try:
        with rawpy.imread(str(path)) as raw:
            return raw.sizes.width, raw.sizes.height, reading
    except rawpy.LibRawError as exc:
        if reading is not None:
            return 0, 0, reading  # exiv2 read its structure: the pixels are judged when decoded
        raise StageError(
            f"not a readable {fmt.name} file: neither exiv2 nor LibRaw recognises its content "
            f"({libraw_words(exc)})"
        ) from None


def libraw_words(exc: BaseException) -> str:
    """A LibRaw failure in words."""
    for kind, words in _LIBRAW_WORDS:
        if isinstance(exc, kind):
            return words
    return "LibRaw cannot read it"


def raw_preview(path: str | Path, size: int, minimum: int, reading: Exiv2Reading | None = None) -> Image.Image:
    """The RAW file's image, upright, long side at most ``size`` px: its largest embedded preview
    when that has at least ``minimum`` px on its long side (turned by the RAW's EXIF orientation),
    else a half-size LibRaw demosaic (LibRaw applies the orientation itself). ``reading``: exiv2's,
    when the caller has it already.

    Raises:
        StageError: "no embedded preview and LibRaw cannot demosaic it: ..." and the like.
    """
    reading = reading or _reading_or_none(path)
    if reading is not None and reading.previews and max(reading.previews[-1][:2]) >= minimum:
        try:
            image = _embedded_preview(path, reading.previews[-1][3], size)
        except StageError:
            image = None  # a broken preview: the RAW data may still demosaic
        if image is not None:
            return upright(image, reading.exif.get("Exif.Image.Orientation"))
    return demosaic(path, size)


def _reading_or_none(path: str | Path) -> Exiv2Reading | None:
    try:
        return read_exiv2(path)
    except StageError:
        return None


def _embedded_preview(path: str | Path, index: int, size: int) -> Image.Image:
    with exiv2_image(path) as image:
        manager = exiv2.PreviewManager(image)
        data = bytes(manager.getPreviewImage(manager.getPreviewProperties()[index]).copy().data())
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "TIFF")) as im:
            width, height = im.size
            factor = size / max(width, height, 1)  # draft picks the smallest DCT scale at least this large
            im.draft("RGB", (max(1, round(width * factor)), max(1, round(height * factor))))
            im.load()
            im.thumbnail((size, size), Image.Resampling.BILINEAR)
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise StageError(f"the embedded preview is corrupt: {exc}") from None


def upright(image: Image.Image, orientation: Any) -> Image.Image:
    """``image`` turned by an EXIF orientation (1-8); other values leave it as stored."""
    method = ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def demosaic(path: str | Path, size: int) -> Image.Image:
    """A half-size LibRaw demosaic (camera white balance, 8 bits, sRGB), long side at most ``size``.

    Raises:
        StageError: LibRaw cannot open, unpack or demosaic the file (in words).
    """
    try:
        with rawpy.imread(str(path)) as raw:
            pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    except rawpy.LibRawError as exc:
        raise StageError(f"no usable embedded preview and {libraw_words(exc)}") from None
    image = Image.fromarray(pixels, "RGB")
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return image
