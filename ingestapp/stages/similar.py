"""Perceptual fingerprint of a picture, computed in the stage process: ``phash`` and ``sharpness``.

Called by the thumbnail stage once the thumbnail exists (``thumbnail.run``), so it sees the same
upright picture: the cached preview (EXIF orientation applied; a video's preview frame), or the
stored thumbnail when an identical file was seen before and the preview was never decoded. Both
are first reduced to a grayscale image of :data:`FINGERPRINT_SIZE` px on the long side, so the two
sources give the same figures within rounding.

- ``phash``: the DCT perceptual hash of imagehash (``imagehash.phash``: 32 x 32 grayscale, the
  8 x 8 lowest DCT frequencies compared with their median; Zauner 2010, "Implementation and
  Benchmarking of Perceptual Image Hash Functions"), 64 bits as 16 lower-case hex digits.
  Pictures are compared by the Hamming distance of their hashes (``catalog/similar.py``).
- ``sharpness``: the variance of the Laplacian of the reduced grayscale image (Pech-Pacheco et
  al. 2000, "Diatom autofocusing in brightfield microscopy"), on 0-255 samples: higher is sharper.
  Only compared between pictures of one group, to pick the one to keep.

A picture that cannot be fingerprinted gets ``None`` for both: never an error of its own (the
thumbnail stage already reports an undecodable file).
"""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from ingestapp.stages.base import FileContext
from ingestapp.stages.media import IMAGE_ERRORS

#: Long side, in pixels, of the grayscale image both figures are computed from.
FINGERPRINT_SIZE = 256


def run(ctx: FileContext, thumbnail: Path) -> None:
    """Set ``ctx.item["phash"]`` (16 hex digits) and ``ctx.item["sharpness"]`` (float), or leave
    them None when neither the preview nor the thumbnail at ``thumbnail`` can be read."""
    try:
        gray = _grayscale(ctx.cache.get("preview"), thumbnail)
        ctx.item["phash"] = str(imagehash.phash(gray))
        ctx.item["sharpness"] = laplacian_variance(gray)
    except IMAGE_ERRORS:
        ctx.item["phash"] = ctx.item["sharpness"] = None


def _grayscale(preview: object, thumbnail: Path) -> Image.Image:
    if isinstance(preview, Image.Image):
        return reduce_gray(preview)
    with Image.open(thumbnail, formats=("JPEG",)) as stored:
        return reduce_gray(stored)


def reduce_gray(image: Image.Image) -> Image.Image:
    """``image`` in grayscale ("L"), long side at most :data:`FINGERPRINT_SIZE` px."""
    gray = image.convert("L")
    gray.thumbnail((FINGERPRINT_SIZE, FINGERPRINT_SIZE), Image.Resampling.BILINEAR)
    return gray


def laplacian_variance(gray: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of a grayscale image (0-255 samples), rounded to
    0.01; 0.0 for an image under 3 x 3 px."""
    a = np.asarray(gray, dtype=np.float32)
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0.0
    laplacian = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4 * a[1:-1, 1:-1]
    return round(float(laplacian.var()), 2)
