"""Formats benchmark (issue 17): RAW against JPEG, a LibRaw demosaic, and the JPEG pipeline against
libvips' ``vipsthumbnail``.

It writes a card of ``--shots`` distinct shots (``--size`` px, scenes from the corpus's camera
JPEGs, upscaled, each made distinct by its own noise, EXIF kept) twice: as camera JPEGs and as DNGs
(12-bit RGGB mosaic, Deflate-compressed, tests/rawfiles.py) embedding the same JPEG as their
preview, as cameras do.
Then, with ``--workers`` stage processes (``pipeline_bench.run_once``: the ingest job in-process):

* ``jpeg`` / ``raw`` in mode ``metadata`` (identify = hash + the one decode, metadata, thumbnail;
  no keywords, scores, NSFW or duplicate skipping) and ``full`` (every stage), ``--repeat`` times,
  alternating; the RAW card's files/s against the JPEG card's;
* ``vipsthumbnail -s 320`` alone on the same JPEGs, ``--workers`` processes (``xargs -P``), one
  libvips thread each (``VIPS_CONCURRENCY=1``), against the ``metadata`` mode on the JPEGs;
* the seconds of one half-size demosaic (``raw.demosaic``, in this process) of a DNG without preview.

    .venv/bin/python bench/formats_bench.py --shots 200 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pipeline_bench import run_once  # noqa: E402

from ingestapp.stages.raw import demosaic  # noqa: E402
from tests.rawfiles import write_dng  # noqa: E402

CORPUS = REPO.parent / "shared/corpus/camera-samples"


def scenes() -> list[tuple[Image.Image, bytes]]:
    """The corpus's camera JPEGs (RGB, EXIF bytes), the broken one left out."""
    found = []
    for path in sorted(CORPUS.glob("*.jpg")):
        if path.name == "corrupted.jpg":
            continue
        with Image.open(path) as im:
            found.append((im.convert("RGB"), im.info.get("exif", b"")))
    return found


def write_card(root: Path, shots: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """``root/jpeg/IMG_nnnn.JPG`` and ``root/raw/IMG_nnnn.DNG`` of the same shots."""
    jpegs, raws = root / "jpeg", root / "raw"
    jpegs.mkdir(parents=True)
    raws.mkdir()
    sources = scenes()
    rng = np.random.default_rng(17)
    for i in range(shots):
        scene, exif = sources[i % len(sources)]
        pixels = np.asarray(scene.resize(size, Image.Resampling.BILINEAR), dtype=np.int16)
        pixels = np.clip(pixels + rng.integers(-6, 7, pixels.shape), 0, 255).astype(np.uint8)
        shot = Image.fromarray(pixels, "RGB")
        buffer = io.BytesIO()
        shot.save(buffer, format="JPEG", quality=90, exif=exif)
        (jpegs / f"IMG_{i:04d}.JPG").write_bytes(buffer.getvalue())
        write_dng(raws / f"IMG_{i:04d}.DNG", shot, preview=shot, deflate=True)
    return jpegs, raws


def vipsthumbnail_rate(directory: Path, workers: int) -> float:
    """Files/s of ``vipsthumbnail -s 320`` over the directory's files, ``workers`` processes."""
    files = sorted(str(p) for p in directory.iterdir())
    with tempfile.TemporaryDirectory(prefix="vips-") as out:
        env = {**os.environ, "VIPS_CONCURRENCY": "1"}
        started = time.perf_counter()
        subprocess.run(
            ["xargs", "-0", "-P", str(workers), "-n", "25", "vipsthumbnail", "-s", "320", "-o", f"{out}/%s.jpg"],
            input="\0".join(files).encode(), env=env, check=True,
        )
        seconds = time.perf_counter() - started
    return len(files) / seconds


def stage_seconds(jpegs: Path, raws: Path, batch: int = 10) -> dict[str, float]:
    """Seconds per file of the stages of the ``metadata`` mode (identify, metadata, thumbnail) run
    in this process on the JPEGs and on the DNGs, and of ``vipsthumbnail -s 320`` (one process, one
    thread) on the JPEGs, interleaved batch by batch so that the machine's load drifts alike for all."""
    from ingestapp.core.parameters import IngestParameters
    from ingestapp.stages import identify, metadata, thumbnail
    from ingestapp.stages.base import FileContext

    parameters = IngestParameters(directory=str(jpegs.parent), extract_keywords=False, import_scores=False,
                                  enable_nsfw_detection=False, skip_duplicates=False)
    totals = {"jpeg": 0.0, "raw": 0.0, "vipsthumbnail": 0.0}
    names = sorted(p.name for p in jpegs.iterdir())
    with tempfile.TemporaryDirectory(prefix="stage-thumbs-") as thumbs:
        for start in range(0, len(names), batch):
            chunk = names[start:start + batch]
            for card, folder in (("jpeg", jpegs), ("raw", raws)):
                started = time.perf_counter()
                for name in chunk:
                    path = folder / (name if card == "jpeg" else name.replace(".JPG", ".DNG"))
                    ctx = FileContext(path, path.name, parameters, Path(thumbs) / card)
                    for stage in (identify, metadata, thumbnail):
                        stage.run(ctx)
                    ctx.close()
                totals[card] += time.perf_counter() - started
            started = time.perf_counter()
            subprocess.run(["vipsthumbnail", "-s", "320", "-o", f"{thumbs}/%s.jpg", *(str(jpegs / n) for n in chunk)],
                           env={**os.environ, "VIPS_CONCURRENCY": "1"}, check=True)
            totals["vipsthumbnail"] += time.perf_counter() - started
    return {key: value / len(names) for key, value in totals.items()}


def demosaic_seconds(root: Path, size: tuple[int, int], count: int = 3) -> float:
    """Median seconds of a half-size demosaic (long side 1024 px out) of a DNG without preview."""
    with Image.open(next((root / "jpeg").iterdir())) as im:
        path = write_dng(root / "demosaic.dng", im.convert("RGB").resize(size))
    times = []
    for _ in range(count):
        started = time.perf_counter()
        demosaic(path, 1024)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=200)
    parser.add_argument("--size", default="3000x2000", help="WxH of each shot")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    size = tuple(int(n) for n in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="formats-bench-"))
    try:
        jpegs, raws = write_card(root, args.shots, size)
        rates: dict[tuple[str, str], list[float]] = {}
        vips: list[float] = []
        for mode in ("metadata", "full"):
            for card in (jpegs, raws):
                run_once(card, mode, args.workers)  # warm-up: pool processes start, the model loads
        for _ in range(args.repeat):
            for mode in ("metadata", "full"):
                for card in (jpegs, raws):
                    result = run_once(card, mode, args.workers)
                    assert result["errors"] == 0, result
                    rates.setdefault((card.name, mode), []).append(result["files_per_s"])
            vips.append(vipsthumbnail_rate(jpegs, args.workers))
        per_file = stage_seconds(jpegs, raws)
        sizes = {card.name: statistics.mean(p.stat().st_size for p in card.iterdir()) / 1e6 for card in (jpegs, raws)}
        report(args, size, rates, vips, demosaic_seconds(root, size), sizes, per_file)
    finally:
        shutil.rmtree(root)
    return 0


def report(args: argparse.Namespace, size: tuple[int, ...], rates: dict[tuple[str, str], list[float]],
           vips: list[float], demosaic_s: float, sizes: dict[str, float], per_file: dict[str, float]) -> None:
    median: dict[Any, float] = {key: statistics.median(values) for key, values in rates.items()}
    print(f"{args.shots} shots of {size[0]}x{size[1]} px, {args.workers} stage processes, "
          f"median of {args.repeat} runs; {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"mean file size: JPEG {sizes['jpeg']:.1f} MB, DNG {sizes['raw']:.1f} MB")
    print("| card | mode | files/s (median) | runs | RAW / JPEG |")
    print("|---|---|---|---|---|")
    for mode in ("metadata", "full"):
        for card in ("jpeg", "raw"):
            runs = ", ".join(f"{v:.1f}" for v in rates[(card, mode)])
            ratio = f"{median[('raw', mode)] / median[('jpeg', mode)]:.2f}x" if card == "raw" else ""
            print(f"| {card} | {mode} | {median[(card, mode)]:.1f} | {runs} | {ratio} |")
    vips_median = statistics.median(vips)
    print(f"\nvipsthumbnail -s 320 alone, {args.workers} processes: {vips_median:.1f} files/s "
          f"(runs {', '.join(f'{v:.1f}' for v in vips)}); the metadata mode on the JPEGs: "
          f"{median[('jpeg', 'metadata')] / vips_median:.2f}x of it")
    paired = [raw / jpeg for raw, jpeg in zip(rates[("raw", "metadata")], rates[("jpeg", "metadata")], strict=True)]
    print(f"RAW / JPEG run by run (metadata mode): {', '.join(f'{r:.2f}' for r in paired)}")
    paired = [jpeg / v for jpeg, v in zip(rates[("jpeg", "metadata")], vips, strict=True)]
    print(f"JPEG metadata mode / vipsthumbnail run by run: {', '.join(f'{r:.2f}' for r in paired)}")
    ms = {key: value * 1000 for key, value in per_file.items()}
    print(f"\nstages in one process (identify + metadata + thumbnail), ms per file: JPEG {ms['jpeg']:.1f}, "
          f"DNG {ms['raw']:.1f} (RAW / JPEG {ms['jpeg'] / ms['raw']:.2f}x in files/s); vipsthumbnail alone, one "
          f"process: {ms['vipsthumbnail']:.1f} (JPEG stages {ms['vipsthumbnail'] / ms['jpeg']:.2f}x of its files/s)")
    print(f"half-size demosaic of one {size[0]}x{size[1]} DNG (LibRaw, 1 process): {demosaic_s:.2f} s")


if __name__ == "__main__":
    raise SystemExit(main())
