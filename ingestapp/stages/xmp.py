"""XMP packets: parsing (keywords and rating) and collection from the file and its sidecars.

XMP (ISO 16684-1, "XMP Specification Part 1") is RDF/XML. Only the properties the pipeline
uses are read: ``dc:subject`` (a bag of keywords), ``lr:hierarchicalSubject`` (Lightroom,
"Animals|Birds|Owl"), ``digiKam:TagsList`` (digiKam, "Animals/Birds/Owl") and ``xmp:Rating``
(attribute or element form). XML is parsed exclusively with defusedxml, so entity expansion
("billion laughs") and external entities are refused rather than resolved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from PIL.TiffImagePlugin import TiffImageFile

from ingestapp.core.limits import MAX_SIDECAR_BYTES
from ingestapp.core.paths import OutsideMediaRoots, display_path, is_file, open_confined
from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.media import is_raw, kind, open_image
from ingestapp.stages.raw import xmp_packet

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
XMP = "http://ns.adobe.com/xap/1.0/"
LIGHTROOM = "http://ns.adobe.com/lightroom/1.0/"
DIGIKAM = "http://www.digikam.org/ns/1.0/"

_XMP_TIFF_TAG = 700  # TIFF/EP tag holding the XMP packet (XMP Part 3 §1.1.4)
_PADDING = b"\x00 \t\r\n"  # packets are padded with whitespace (and NULs in some TIFF writers)


class XmpError(ValueError):
    """An XMP packet is not well-formed XML, or uses forbidden constructs (entities, DTDs)."""


@dataclass(frozen=True)
class XmpFields:
    """What one XMP packet says.

    Attributes:
        subjects: keywords in packet order: dc:subject entries, then the leaf of each
            lr:hierarchicalSubject ("a|b|c" -> "c"), then of each digiKam:TagsList ("a/b/c" -> "c");
            stripped, empty entries dropped, not deduplicated.
        rating: xmp:Rating as an int in -1..5 (-1 = rejected, 0 = unrated), None if absent/invalid.
    """

    subjects: list[str]
    rating: int | None


@dataclass(frozen=True)
class XmpSources:
    """The parsed XMP of one media file.

    Attributes:
        embedded: the packet inside the file, None if absent or malformed (ignored silently).
        sidecars: ``(path, fields)`` for ``name.ext.xmp`` then ``name.xmp``, those that exist.
    """

    embedded: XmpFields | None
    sidecars: list[tuple[Path, XmpFields]]


def parse_xmp(data: bytes) -> XmpFields:
    """Parse one serialized XMP packet (with or without the ``<?xpacket?>`` wrapper).

    Raises:
        XmpError: malformed XML, or entity/DTD tricks refused by defusedxml.
    """
    try:
        root = fromstring(data.strip(_PADDING))
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise XmpError(str(exc) or type(exc).__name__) from None
    subjects = _values(root, DC, "subject")
    subjects += [_leaf(value, "|") for value in _values(root, LIGHTROOM, "hierarchicalSubject")]
    subjects += [_leaf(value, "/") for value in _values(root, DIGIKAM, "TagsList")]
    return XmpFields(subjects=[s for s in subjects if s], rating=_rating(root))


def parse_rating(text: str | None) -> int | None:
    """An xmp:Rating value ("-1".."5", decimals such as "3.0" allowed) as int; else None."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    if not math.isfinite(value) or not -1 <= value <= 5:
        return None
    return math.floor(value + 0.5)


def _values(root: Element, namespace: str, name: str) -> list[str]:
    """Texts of the rdf:li items of every ``namespace:name`` property (or its simple text)."""
    values: list[str] = []
    for prop in root.iter(f"{{{namespace}}}{name}"):
        items = [li.text or "" for li in prop.iter(f"{{{RDF}}}li")]
        values += items if items else [prop.text or ""]
    return [value.strip() for value in values if value.strip()]


def _leaf(path: str, separator: str) -> str:
    return path.rsplit(separator, 1)[-1].strip()


def _rating(root: Element) -> int | None:
    """The first xmp:Rating, as an attribute of an rdf:Description or as a property element."""
    name = f"{{{XMP}}}Rating"
    for node in root.iter():
        text = node.get(name)
        if text is None and node.tag == name:
            text = node.text
        if text is not None:
            return parse_rating(text)
    return None


def embedded_packet(path: str | Path) -> bytes | None:
    """The XMP packet stored in an image (JPEG APP1, PNG iTXt, WebP/HEIF chunk, TIFF tag 700)."""
    with open_image(path) as im:
        packet = im.info.get("xmp")
        if not packet and isinstance(im, TiffImageFile):
            packet = im.tag_v2.get(_XMP_TIFF_TAG)
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    return packet if isinstance(packet, bytes) and packet.strip(_PADDING) else None


def sidecar_paths(path: Path) -> list[Path]:
    """Existing XMP sidecars of ``path``: ``name.ext.xmp`` (darktable) then ``name.xmp`` (Adobe)."""
    candidates = [path.with_name(path.name + ".xmp"), path.with_suffix(".xmp")]
    unique = list(dict.fromkeys(candidates))
    return [candidate for candidate in unique if candidate != path and is_file(candidate)]


def read_sidecar(path: Path, media_roots: Sequence[Path] = (), limit: int = MAX_SIDECAR_BYTES) -> bytes:
    """Bytes of a small sidecar file; StageError if unreadable, larger than ``limit`` bytes (never
    read past it: a huge file costs no memory), or (when ``media_roots`` are given) a file outside
    them once opened (``paths.open_confined``)."""
    name = display_path(path.name)
    try:
        with open_confined(path, media_roots) as f:
            data = f.read(limit + 1)
    except OutsideMediaRoots:
        raise StageError(f"sidecar {name} leads outside the media roots: not read") from None
    except PermissionError:
        raise StageError(f"cannot read sidecar {name}: permission denied") from None
    except OSError as exc:
        raise StageError(f"cannot read sidecar {name}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise StageError(f"sidecar {name} is larger than {limit:,} bytes: not read")
    return data


def xmp_sources(ctx: FileContext) -> XmpSources:
    """Embedded and sidecar XMP of the file, parsed once and cached in ``ctx.cache["xmp"]``.

    Raises:
        StageError: a sidecar exists but is malformed ("malformed XMP sidecar name.xmp: ...")
            or unreadable. A malformed *embedded* packet is ignored: the file's own pixels and
            other metadata are still fine.
    """
    cached = ctx.cache.get("xmp")
    if isinstance(cached, XmpSources):
        return cached
    sources = XmpSources(embedded=_embedded_fields(ctx), sidecars=_sidecar_fields(ctx.path, ctx.media_roots))
    ctx.cache["xmp"] = sources
    return sources


def _embedded_fields(ctx: FileContext) -> XmpFields | None:
    if kind(ctx) != "image":
        return None  # XMP inside video containers (MP4 uuid box) is not exposed by FFmpeg
    packet = xmp_packet(ctx.media()) if is_raw(ctx) else embedded_packet(ctx.media())
    if packet is None:
        return None
    try:
        return parse_xmp(packet)
    except XmpError:
        return None


def _sidecar_fields(path: Path, media_roots: Sequence[Path]) -> list[tuple[Path, XmpFields]]:
    parsed = []
    for sidecar in sidecar_paths(path):
        try:
            parsed.append((sidecar, parse_xmp(read_sidecar(sidecar, media_roots))))
        except XmpError as exc:
            raise StageError(f"malformed XMP sidecar {display_path(sidecar.name)}: {exc}") from None
    return parsed
