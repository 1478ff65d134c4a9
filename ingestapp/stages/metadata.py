"""Stage "metadata": camera EXIF for images, container/stream facts for videos.

Images (EXIF 2.32 via Pillow): ``make``, ``model``, ``lens_model``, ``datetime_original`` (ISO 8601,
with the offset from OffsetTimeOriginal when present), ``exposure_time_s`` (seconds),
``f_number``, ``iso``, ``focal_length_mm``, ``orientation`` (1-8) and ``gps``
(``{latitude, longitude, altitude_m}``: decimal degrees, south/west negative; metres, below sea
level negative). Videos (PyAV/FFmpeg): ``duration_s``, ``video_codec``, ``fps``,
``datetime_original`` (container ``creation_time``) and ``orientation`` from the display matrix.

Camera RAW files are read with exiv2 (``raw.read_exiv2``); for other images exiv2 fills in the
fields Pillow leaves empty (old cameras' EXIF blocks Pillow skips, a truncated file), so a field
is None only when neither finds it.

EXIF is untrusted input: anything missing, malformed or out of range becomes ``None`` and is
never an error for the file.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import av
import av.error
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.media import is_raw, kind, open_image, video_duration_s
from ingestapp.stages.raw import Exiv2Reading, read_exiv2

NAME = "metadata"

_Base = ExifTags.Base
_GPS = ExifTags.GPS
#: Pillow's EXIF reader is lenient (it warns and skips), but odd IFDs can still raise these.
_EXIF_ERRORS = (SyntaxError, ValueError, KeyError, TypeError, IndexError, OSError, struct.error)
# A pattern rather than datetime.strptime: writers also use "-" in the date and "T" before the time.
_EXIF_DATETIME = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_CW_ROTATION_TO_ORIENTATION = {0: 1, 90: 6, 180: 3, 270: 8}  # EXIF 2.32 §4.6.4 Orientation


def run(ctx: FileContext) -> None:
    """Merge the extracted fields into ``ctx.item["metadata"]``."""
    if kind(ctx) == "video":
        fields, (width, height) = video_metadata(ctx)
        ctx.item["width"] = ctx.item["width"] or width
        ctx.item["height"] = ctx.item["height"] or height
    else:
        fields = image_metadata(ctx)
    ctx.item["metadata"].update(fields)


# --- images -------------------------------------------------------------------------------


def image_metadata(ctx: FileContext) -> dict[str, Any]:
    """EXIF fields of an image (see the module docstring for names and units).

    Raises:
        StageError: a RAW file whose metadata exiv2 cannot read; an image Pillow cannot open.
    """
    if is_raw(ctx):
        return exiv2_metadata(ctx.cache.get("exiv2") or read_exiv2(ctx.media()))
    fields = pillow_metadata(ctx)
    if any(value is None for value in fields.values()):
        try:
            extra = exiv2_metadata(read_exiv2(ctx.media()))
        except StageError:
            return fields  # Pillow's reading stands
        fields = {name: extra[name] if value is None else value for name, value in fields.items()}
    return fields


def exiv2_metadata(reading: Exiv2Reading) -> dict[str, Any]:
    """The image fields from exiv2's reading (tag names as in EXIF 2.32; the Image IFD copies
    TIFF/EP writers use stand in for missing Exif IFD ones)."""
    exif = reading.exif

    def first(*keys: str) -> Any:
        return next((exif[key] for key in keys if exif.get(key) is not None), None)

    gps = {
        _GPS.GPSLatitude: exif.get("Exif.GPSInfo.GPSLatitude"),
        _GPS.GPSLatitudeRef: exif.get("Exif.GPSInfo.GPSLatitudeRef"),
        _GPS.GPSLongitude: exif.get("Exif.GPSInfo.GPSLongitude"),
        _GPS.GPSLongitudeRef: exif.get("Exif.GPSInfo.GPSLongitudeRef"),
        _GPS.GPSAltitude: exif.get("Exif.GPSInfo.GPSAltitude"),
        _GPS.GPSAltitudeRef: exif.get("Exif.GPSInfo.GPSAltitudeRef"),
    }
    return {
        "make": exif_text(exif.get("Exif.Image.Make")),
        "model": exif_text(exif.get("Exif.Image.Model")),
        "lens_model": exif_text(first("Exif.Photo.LensModel", "Exif.Canon.LensModel")),
        "datetime_original": exif_datetime(
            first("Exif.Photo.DateTimeOriginal", "Exif.Image.DateTimeOriginal"),
            exif.get("Exif.Photo.OffsetTimeOriginal"),
        ),
        "exposure_time_s": _positive(first("Exif.Photo.ExposureTime", "Exif.Image.ExposureTime")),
        "f_number": _positive(first("Exif.Photo.FNumber", "Exif.Image.FNumber")),
        "iso": _iso(first("Exif.Photo.ISOSpeedRatings", "Exif.Image.ISOSpeedRatings")) or _maker_note_iso(exif),
        "focal_length_mm": _positive(first("Exif.Photo.FocalLength", "Exif.Image.FocalLength")),
        "orientation": _orientation(exif.get("Exif.Image.Orientation")),
        "gps": gps_position(gps),
    }


def _maker_note_iso(exif: Mapping[str, Any]) -> int | None:
    """ISO speed from a maker note when the EXIF tag is absent (older Canon and Nikon cameras):
    Canon ShotInfo ISOSpeed as exiv2 prints it, Nikon ISOSpeed's second value."""
    canon = exif.get("Exif.CanonSi.ISOSpeed")
    if isinstance(canon, str) and canon.strip().isdigit():
        return _iso(int(canon))
    nikon = exif.get("Exif.Nikon3.ISOSpeed")
    return _iso(nikon[1]) if isinstance(nikon, tuple) and len(nikon) == 2 else None


def pillow_metadata(ctx: FileContext) -> dict[str, Any]:
    """The image fields as Pillow reads them (None where it finds nothing)."""
    with open_image(ctx.media()) as im:
        base, exif_ifd, gps_ifd = read_exif(im)
    return {
        "make": exif_text(base.get(_Base.Make)),
        "model": exif_text(base.get(_Base.Model)),
        "lens_model": exif_text(exif_ifd.get(_Base.LensModel)),
        "datetime_original": exif_datetime(
            exif_ifd.get(_Base.DateTimeOriginal), exif_ifd.get(_Base.OffsetTimeOriginal)
        ),
        "exposure_time_s": _positive(exif_ifd.get(_Base.ExposureTime)),
        "f_number": _positive(exif_ifd.get(_Base.FNumber)),
        "iso": _iso(exif_ifd.get(_Base.ISOSpeedRatings)),
        "focal_length_mm": _positive(exif_ifd.get(_Base.FocalLength)),
        "orientation": _orientation(base.get(_Base.Orientation)),
        "gps": gps_position(gps_ifd),
    }


def read_exif(im: Image.Image) -> tuple[Mapping[int, Any], Mapping[int, Any], Mapping[int, Any]]:
    """(IFD0, Exif IFD, GPS IFD) as tag-number mappings; empty mappings where unreadable."""
    try:
        exif = im.getexif()
    except _EXIF_ERRORS:
        return {}, {}, {}
    return dict(exif), _sub_ifd(exif, ExifTags.IFD.Exif), _sub_ifd(exif, ExifTags.IFD.GPSInfo)


def _sub_ifd(exif: Image.Exif, ifd: ExifTags.IFD) -> Mapping[int, Any]:
    try:
        return exif.get_ifd(ifd)
    except _EXIF_ERRORS:
        return {}


def exif_text(value: Any) -> str | None:
    """An EXIF ASCII/UNDEFINED value as clean text, cut at the first NUL (EXIF ASCII values are
    NUL-terminated; bytes after it are leftovers) and stripped; empty -> None."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    return value.split("\x00", 1)[0].strip() or None


def exif_datetime(value: Any, offset: Any = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ OffsetTime* "+HH:MM", EXIF 2.31) as ISO 8601; None if malformed."""
    text = exif_text(value)
    match = _EXIF_DATETIME.match(text or "")
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None  # "0000:00:00 00:00:00", 30 February, hour 25...
    zone = _utc_offset(exif_text(offset))
    return (moment.replace(tzinfo=zone) if zone else moment).isoformat()


def _utc_offset(text: str | None) -> timezone | None:
    match = _EXIF_OFFSET.fullmatch(text or "")
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta) if delta < timedelta(hours=24) else None


def exif_number(value: Any) -> float | None:
    """A RATIONAL/SRATIONAL/integer EXIF value as a finite float; zero denominators -> None."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]  # some writers store single values as one-element arrays
    if isinstance(value, IFDRational) and value.denominator == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction | IFDRational):
        return None
    try:
        number = float(value)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _positive(value: Any) -> float | None:
    # Exposure, aperture and focal length of 0 are "unknown" in practice (e.g. manual lenses).
    number = exif_number(value)
    return number if number is not None and number > 0 else None


def _iso(value: Any) -> int | None:
    if isinstance(value, tuple) and value:
        value = value[0]  # ISOSpeedRatings is an array; the first entry is the sensitivity
    number = exif_number(value)
    return int(number) if number is not None and number > 0 else None


def _orientation(value: Any) -> int | None:
    number = exif_number(value)
    return int(number) if number is not None and number.is_integer() and 1 <= number <= 8 else None


def gps_position(gps: Mapping[int, Any]) -> dict[str, float | None] | None:
    """EXIF 2.32 §4.6.6 GPS IFD as ``{latitude, longitude, altitude_m}``; None when absent/invalid.

    Latitude/longitude are decimal degrees (GPSLatitudeRef "S" and GPSLongitudeRef "W" make them
    negative); altitude is metres, negative below sea level (GPSAltitudeRef 1, or 3 in EXIF 3.0),
    None when not recorded.
    """
    latitude = _degrees(gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLatitudeRef), "S")
    longitude = _degrees(gps.get(_GPS.GPSLongitude), gps.get(_GPS.GPSLongitudeRef), "W")
    if latitude is None or longitude is None or abs(latitude) > 90 or abs(longitude) > 180:
        return None
    if latitude == 0 and longitude == 0:
        return None  # receivers without a fix write zeros; "Null Island" is not a real location
    return {
        "latitude": round(latitude, 7),
        "longitude": round(longitude, 7),
        "altitude_m": _altitude(gps.get(_GPS.GPSAltitude), gps.get(_GPS.GPSAltitudeRef)),
    }


def _degrees(value: Any, ref: Any, negative_ref: str) -> float | None:
    parts = value if isinstance(value, tuple) else (value,)
    numbers = [exif_number(part) for part in parts[:3]]
    if not numbers or any(number is None for number in numbers):
        return None
    degrees = sum(abs(number) / 60**i for i, number in enumerate(numbers) if number is not None)
    return -degrees if (exif_text(ref) or "").upper().startswith(negative_ref) else degrees


def _altitude(value: Any, ref: Any) -> float | None:
    metres = exif_number(value)
    if metres is None:
        return None
    if isinstance(ref, bytes):
        ref = ref[0] if ref else 0
    below = exif_number(ref) in (1, 3)
    return round(-abs(metres) if below else metres, 2)


# --- videos -------------------------------------------------------------------------------


def video_metadata(ctx: FileContext) -> tuple[dict[str, Any], tuple[int, int]]:
    """(fields, (width, height)) of the first video stream, read with PyAV."""
    try:
        with av.open(ctx.media()) as container:
            stream = container.streams.video[0]
            duration = video_duration_s(container)
            fields = {
                "duration_s": round(duration, 3) if duration else None,
                "video_codec": stream.codec_context.name,
                "fps": _fps(stream),
                "datetime_original": _creation_time(container.metadata) or _creation_time(stream.metadata),
                "orientation": _video_orientation(container, stream),
            }
            size = (stream.codec_context.width, stream.codec_context.height)
    except (av.error.FFmpegError, IndexError) as exc:
        raise StageError(f"corrupt or unreadable video: {exc}") from None
    return fields, size


def _fps(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return round(float(rate), 3) if rate else None


def _creation_time(metadata: Mapping[str, str]) -> str | None:
    """The ``creation_time`` tag (ISO 8601, usually UTC) normalised; epoch placeholders -> None."""
    try:
        moment = datetime.fromisoformat(metadata.get("creation_time", "").strip())
    except ValueError:
        return None
    if moment.year <= 1970:
        return None  # QuickTime (1904) and Unix (1970) epochs: the recorder never set a date
    return moment.isoformat(timespec="seconds")


def _video_orientation(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> int | None:
    """EXIF-style orientation for the clockwise display rotation; None when unknown."""
    rotate = stream.metadata.get("rotate")  # legacy tag, clockwise degrees
    if rotate is not None:
        try:
            return _CW_ROTATION_TO_ORIENTATION.get(int(rotate) % 360)
        except ValueError:
            return None
    try:
        frame = next(container.decode(stream), None)
    except av.error.FFmpegError:
        return None
    if frame is None:
        return None
    # The display matrix angle is counter-clockwise; EXIF orientations describe clockwise turns.
    return _CW_ROTATION_TO_ORIENTATION.get(round(-frame.rotation) % 360)
