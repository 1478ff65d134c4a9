"""Camera RAW files written by the tests: DNGs made from a real photo, with or without a JPEG preview.

A DNG (Adobe DNG 1.4 specification) is a TIFF whose raw IFD holds a colour-filter-array mosaic
(PhotometricInterpretation 32803, CFARepeatPatternDim 2 by 2, CFAPattern RGGB). tifffile writes the
TIFF structure; exiv2 adds the embedded JPEG preview (an IFD1 thumbnail), as cameras do.
"""

from __future__ import annotations

import io
from pathlib import Path

import exiv2
import numpy as np
import tifffile
from PIL import Image

CORPUS = Path(__file__).resolve().parents[2] / "shared/corpus"
PHOTO = CORPUS / "camera-samples/Canon_40D.jpg"

_DNG_VERSION, _UNIQUE_CAMERA_MODEL, _CFA_DIM, _CFA_PATTERN = 50706, 50708, 33421, 33422
_MAKE, _MODEL, _ORIENTATION, _DATETIME_ORIGINAL, _WHITE_LEVEL = 271, 272, 274, 36867, 50717


def photo(size: tuple[int, int] = (1200, 816)) -> Image.Image:
    """The corpus's Canon 40D photo (a real scene), scaled to ``size``; skips when the corpus is absent."""
    import pytest

    if not PHOTO.is_file():
        pytest.skip(f"camera-sample corpus not found at {PHOTO}")
    with Image.open(PHOTO) as im:
        return im.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def mosaic(image: Image.Image) -> np.ndarray:
    """An RGGB Bayer mosaic of ``image``, 12-bit samples in uint16."""
    rgb = np.asarray(image).astype(np.uint16) * 16
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = rgb[0::2, 0::2, 0]
    cfa[0::2, 1::2] = rgb[0::2, 1::2, 1]
    cfa[1::2, 0::2] = rgb[1::2, 0::2, 1]
    cfa[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return cfa


def write_dng(
    path: Path, raw: Image.Image, preview: Image.Image | None = None, orientation: int = 1,
    taken: str = "2025:06:07 08:09:10", deflate: bool = False,
) -> Path:
    """A DNG whose raw data is ``raw``'s mosaic (Deflate-compressed with a horizontal predictor when
    ``deflate``: about a third of the size, like a camera's losslessly compressed RAW), with
    ``preview`` embedded as JPEG when given."""
    tags = [
        (_DNG_VERSION, "B", 4, (1, 4, 0, 0), True),
        (_UNIQUE_CAMERA_MODEL, "s", 0, "Test Camera DNG", True),
        (_MAKE, "s", 0, "Canon", True),
        (_MODEL, "s", 0, "Canon EOS 40D", True),
        (_ORIENTATION, "H", 1, orientation, True),
        (_DATETIME_ORIGINAL, "s", 0, taken, True),
        (_CFA_DIM, "H", 2, (2, 2), True),
        (_CFA_PATTERN, "B", 4, (0, 1, 1, 2), True),
        (_WHITE_LEVEL, "I", 1, 4095, True),
    ]
    with tifffile.TiffWriter(path) as tif:
        compression = {"compression": "zlib", "compressionargs": {"level": 1}, "predictor": True} if deflate else {}
        tif.write(mosaic(raw), photometric=32803, subfiletype=0, metadata=None, extratags=tags, **compression)
    if preview is not None:
        buffer = io.BytesIO()
        preview.save(buffer, format="JPEG", quality=85)
        image = exiv2.ImageFactory.open(str(path))
        image.readMetadata()
        exiv2.ExifThumb(image.exifData()).setJpegThumbnail(buffer.getvalue())
        image.writeMetadata()
    return path
