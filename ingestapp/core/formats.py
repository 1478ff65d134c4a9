"""The format table: every file extension the pipeline looks at, with its media kind, MIME type
and reader. It is the one place formats are listed; the default scan pattern, the extension
lists and the README's "Formats" section derive from it.

MIME types are the ones exiftool reports (``Image::ExifTool`` ``%mimeType``; ``exiftool -j -n``
``MIMEType``). Readers:

* ``pillow``: Pillow decodes the pixels (JPEG, PNG, TIFF, WebP, GIF, BMP, AVIF natively;
  HEIF through pillow-heif; JPEG XL through pillow-jxl-plugin), Pillow and exiv2 read EXIF.
* ``raw``: camera RAW: exiv2 (libexiv2 0.28, BMFF enabled for CR3) reads the metadata and the
  embedded previews, LibRaw (rawpy) demosaics when no preview is large enough.
* ``video``: PyAV (FFmpeg) demuxes and decodes.
* ``none``: found and typed by its extension, but no installed reader understands it (Sigma X3F:
  LibRaw dropped it in 0.20 and exiv2 never read it); the file becomes an error entry in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reader(StrEnum):
    """Which library reads a format (see the module docstring)."""

    PILLOW = "pillow"
    RAW = "raw"
    VIDEO = "video"
    NONE = "none"


@dataclass(frozen=True)
class Format:
    """One file format.

    Attributes:
        extensions: lower-case file extensions with the dot, the usual one first.
        kind: ``"image"`` or ``"video"``.
        mime_type: the MIME type exiftool names it by.
        reader: which library reads it.
        name: what people call it ("Canon RAW 3"), for messages and the README.
    """

    extensions: tuple[str, ...]
    kind: str
    mime_type: str
    reader: Reader
    name: str


def _image(extensions: str, mime_type: str, name: str, reader: Reader = Reader.PILLOW) -> Format:
    return Format(tuple(extensions.split()), "image", mime_type, reader, name)


def _raw(extensions: str, mime_type: str, name: str) -> Format:
    return _image(extensions, mime_type, name, Reader.RAW)


def _video(extensions: str, mime_type: str, name: str) -> Format:
    return Format(tuple(extensions.split()), "video", mime_type, Reader.VIDEO, name)


#: Every format, in the order the README lists them.
FORMATS: tuple[Format, ...] = (
    _image(".jpg .jpeg", "image/jpeg", "JPEG"),
    _image(".png", "image/png", "PNG"),
    _image(".tif .tiff", "image/tiff", "TIFF"),
    _image(".webp", "image/webp", "WebP"),
    _image(".heic .heif", "image/heif", "HEIF/HEIC"),
    _image(".avif", "image/avif", "AVIF"),
    _image(".jxl", "image/jxl", "JPEG XL"),
    _image(".gif", "image/gif", "GIF"),
    _image(".bmp", "image/bmp", "BMP"),
    _raw(".cr2", "image/x-canon-cr2", "Canon RAW 2 (CR2)"),
    _raw(".cr3", "image/x-canon-cr3", "Canon RAW 3 (CR3)"),
    _raw(".crw", "image/x-canon-crw", "Canon RAW (CRW)"),
    _raw(".nef", "image/x-nikon-nef", "Nikon RAW (NEF)"),
    _raw(".nrw", "image/x-nikon-nrw", "Nikon RAW (NRW)"),
    _raw(".arw", "image/x-sony-arw", "Sony RAW (ARW)"),
    _raw(".srf", "image/x-sony-srf", "Sony RAW (SRF)"),
    _raw(".sr2", "image/x-sony-sr2", "Sony RAW (SR2)"),
    _raw(".raf", "image/x-fujifilm-raf", "Fujifilm RAW (RAF)"),
    _raw(".orf", "image/x-olympus-orf", "Olympus RAW (ORF)"),
    _raw(".rw2", "image/x-panasonic-rw2", "Panasonic RAW (RW2)"),
    _raw(".pef", "image/x-pentax-pef", "Pentax RAW (PEF)"),
    _raw(".dng", "image/x-adobe-dng", "Adobe Digital Negative (DNG)"),
    _raw(".srw", "image/x-samsung-srw", "Samsung RAW (SRW)"),
    _image(".x3f", "image/x-sigma-x3f", "Sigma RAW (X3F)", Reader.NONE),
    _raw(".mrw", "image/x-minolta-mrw", "Minolta RAW (MRW)"),
    _raw(".iiq", "image/x-raw", "Phase One RAW (IIQ)"),
    _raw(".3fr", "image/x-hasselblad-3fr", "Hasselblad RAW (3FR)"),
    _raw(".erf", "image/x-epson-erf", "Epson RAW (ERF)"),
    _raw(".kdc", "image/x-kodak-kdc", "Kodak RAW (KDC)"),
    _raw(".dcr", "image/x-kodak-dcr", "Kodak RAW (DCR)"),
    _raw(".mos", "image/x-raw", "Leaf RAW (MOS)"),
    _raw(".rwl", "image/x-leica-rwl", "Leica RAW (RWL)"),
    _raw(".gpr", "image/x-gopro-gpr", "GoPro RAW (GPR)"),
    _video(".mp4 .m4v", "video/mp4", "MPEG-4"),
    _video(".mov", "video/quicktime", "QuickTime"),
    _video(".3gp", "video/3gpp", "3GPP"),
    _video(".mkv", "video/x-matroska", "Matroska"),
    _video(".webm", "video/webm", "WebM"),
    _video(".avi", "video/x-msvideo", "AVI"),
    _video(".mts .m2ts", "video/m2ts", "AVCHD / MPEG-2 transport stream"),
    _video(".mpg .mpeg", "video/mpeg", "MPEG program stream"),
    _video(".wmv", "video/x-ms-wmv", "Windows Media Video"),
)

_BY_EXTENSION = {extension: fmt for fmt in FORMATS for extension in fmt.extensions}

#: Lower-case extensions (with the dot) of each kind, and all of them.
IMAGE_EXTENSIONS = tuple(ext for fmt in FORMATS if fmt.kind == "image" for ext in fmt.extensions)
VIDEO_EXTENSIONS = tuple(ext for fmt in FORMATS if fmt.kind == "video" for ext in fmt.extensions)
RAW_EXTENSIONS = tuple(ext for fmt in FORMATS if fmt.reader in (Reader.RAW, Reader.NONE) for ext in fmt.extensions)
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


def format_of(name: str) -> Format | None:
    """The format a file name's extension (any case) announces; None for an unknown extension."""
    dot = name.rfind(".")
    return _BY_EXTENSION.get(name[dot:].lower()) if dot >= 0 else None


def is_raw(name: str) -> bool:
    """Whether a file name's extension is a camera RAW one (read or not)."""
    fmt = format_of(name)
    return fmt is not None and fmt.reader in (Reader.RAW, Reader.NONE)


def markdown_table() -> str:
    """The table as Markdown (the README's "Formats" section; a test keeps the two equal)."""
    rows = ["| Extensions | Kind | MIME type | Reader |", "| --- | --- | --- | --- |"]
    for fmt in FORMATS:
        rows.append(f"| {' '.join(fmt.extensions)} | {fmt.kind} | `{fmt.mime_type}` | {fmt.reader} ({fmt.name}) |")
    return "\n".join(rows)
