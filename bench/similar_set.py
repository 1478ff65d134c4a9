"""The near-duplicate test set of issue 19, and the precision and recall of each distance.

Recipe: every decodable picture of ``../shared/corpus/camera-samples`` (and its subfolders) is a
*source*; for each, :func:`write_variants` writes the original and six copies a re-ingest meets in
practice: resized to half, recompressed (JPEG quality 50), cropped by 3 % on every side, cropped
by 6 % on two sides, brightened by 25 %, and turned by EXIF orientation (pixels rotated 90°, the
EXIF ``Orientation`` tag 6 saying how to turn them back). Each file is fingerprinted by the
pipeline's own code (``media.preview`` then ``stages/similar.py``). Every pair of files from one
source is a same-picture pair; every pair from two sources is a different-picture pair (the
corpus holds near-identical scenes, e.g. the gps/ DSCN series from one walk, which makes the
negatives realistic).

Run: ``.venv/bin/python bench/similar_set.py [--max-distance 20]``: prints one line per Hamming
distance with TP, FP, FN, precision and recall, and the largest distance whose precision is at
least 0.95. ``docs/similar.md`` has the figures.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestapp.catalog.similar import CATALOG_CHUNKS, CATALOG_RADIUS, HashIndex, as_array
from ingestapp.core.parameters import IMAGE_EXTENSIONS, IngestParameters
from ingestapp.stages import similar
from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.media import preview

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "camera-samples"

EXIF_ORIENTATION = 0x0112


def sources(corpus: Path = CORPUS) -> list[Path]:
    """Every file under ``corpus`` with an image extension, in path order."""
    return sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def write_variants(source: Path, directory: Path) -> list[Path]:
    """The upright original of ``source`` and its six variants, as JPEGs in ``directory``.

    Raises:
        OSError, ValueError: ``source`` cannot be decoded (the caller skips it).
    """
    with Image.open(source) as im:
        im.load()
        picture = ImageOps.exif_transpose(im).convert("RGB")
    w, h = picture.size
    stem = directory / source.stem
    variants = {
        "original": picture,
        "half": picture.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS),
        "crop3": picture.crop((w * 3 // 100, h * 3 // 100, w - w * 3 // 100, h - h * 3 // 100)),
        "crop6": picture.crop((w * 6 // 100, h * 6 // 100, w, h)),
        "bright": ImageEnhance.Brightness(picture).enhance(1.25),
    }
    written = []
    for name, image in variants.items():
        target = Path(f"{stem}.{name}.jpg")
        image.save(target, quality=90)
        written.append(target)
    written.append(Path(f"{stem}.q50.jpg"))
    picture.save(written[-1], quality=50)
    turned = Path(f"{stem}.exif6.jpg")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90° clockwise to view": the stored pixels are turned left
    picture.transpose(Image.Transpose.ROTATE_90).save(turned, quality=90, exif=exif)
    written.append(turned)
    return written


def fingerprint(path: Path) -> str | None:
    """The pipeline's ``phash`` of the file at ``path`` (None when it cannot be decoded)."""
    ctx = FileContext(path=path, relpath=path.name, parameters=IngestParameters(directory="/"),
                      thumbnail_dir=path.parent)
    try:
        preview(ctx)
    except StageError:
        return None
    finally:
        ctx.close()
    similar.run(ctx, path)
    return ctx.item["phash"]


def labelled_hashes(directory: Path, corpus: Path = CORPUS) -> list[tuple[str, int]]:
    """``(source label, 64-bit hash)`` of every original and variant written to ``directory``."""
    result = []
    for source in sources(corpus):
        try:
            files = write_variants(source, directory)
        except (OSError, ValueError, SyntaxError):
            continue  # not decodable (corrupted.jpg): not part of the set
        result.extend((source.name, int(h, 16)) for f in files if (h := fingerprint(f)) is not None)
    return result


def pair_distances(hashes: list[tuple[str, int]]) -> Iterator[tuple[bool, int]]:
    """``(same picture?, Hamming distance)`` of every pair (the set is small: all pairs is fine)."""
    for (a, ha), (b, hb) in itertools.combinations(hashes, 2):
        yield a == b, (ha ^ hb).bit_count()


def table(hashes: list[tuple[str, int]], max_distance: int) -> list[dict[str, float]]:
    """Per distance 0..max_distance: ``{distance, tp, fp, fn, precision, recall, catalog_recall}``;
    ``catalog_recall`` is the recall of the whole-catalog grouping's index (``group_hashes``:
    fewer probes, exact only up to 8 bits)."""
    pairs = list(pair_distances(hashes))
    positives = sum(same for same, _ in pairs)
    labels = [label for label, _ in hashes]
    values = as_array(h for _, h in hashes)
    index = HashIndex(values, CATALOG_CHUNKS)
    rows = []
    for d in range(max_distance + 1):
        tp = sum(same and dist <= d for same, dist in pairs)
        fp = sum(not same and dist <= d for same, dist in pairs)
        left, right = index.within(values, d, min(CATALOG_RADIUS, d // CATALOG_CHUNKS))
        found = sum(a < b and labels[a] == labels[b] for a, b in zip(left.tolist(), right.tolist(), strict=True))
        rows.append({"distance": d, "tp": tp, "fp": fp, "fn": positives - tp,
                     "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / positives,
                     "catalog_recall": found / positives})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-distance", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hashes = labelled_hashes(Path(tmp))
    print(f"{len(hashes)} files from {len({label for label, _ in hashes})} pictures")
    print("distance      TP      FP      FN  precision  recall  recall (catalog index)")
    rows = table(hashes, args.max_distance)
    for row in rows:
        print(f"{row['distance']:8} {row['tp']:7} {row['fp']:7} {row['fn']:7}  {row['precision']:9.3f}  "
              f"{row['recall']:6.3f}  {row['catalog_recall']:6.3f}")
    good = [row["distance"] for row in rows if row["precision"] >= 0.95]
    print(f"largest distance with precision >= 0.95: {max(good) if good else None}")


if __name__ == "__main__":
    main()
