"""Similar pictures (issue 19): what hashing costs the pipeline, and how fast grouping is.

1. ``stages``: every file of the corpus through the stages a metadata session runs (identify,
   metadata, thumbnail; a fresh thumbnail directory per round, so the preview is decoded each
   time), in this process, timing the fingerprint (``stages/similar.py: run``) apart from the rest.
   The fingerprint's share of the per-file stage time bounds what it takes off files/s.
2. ``grouping``: ``catalog/similar.py: group_hashes`` over N hashes (default 100,000): random
   64-bit values, every tenth followed by a near copy (1 to the distance bits flipped), so the
   expected groups are known; then one session of 1,000 hashes against an index of the N.

    .venv/bin/python bench/similar_bench.py [--rounds 5] [--hashes 100000] [--distance 14]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.similar_set import CORPUS, sources
from ingestapp.catalog.similar import DEFAULT_DISTANCE, HashIndex, group_hashes
from ingestapp.core.parameters import IngestParameters
from ingestapp.stages import similar, stage_modules
from ingestapp.stages.base import FileContext, StageError


def stage_round(files: list[Path], thumbnails: Path) -> tuple[float, float]:
    """Seconds in all stages and seconds in the fingerprint, for one pass over ``files``."""
    parameters = IngestParameters(directory="/", extract_keywords=False, enable_nsfw_detection=False)
    fingerprint = similar.run
    spent = [0.0]

    def timed(ctx: FileContext, thumbnail: Path) -> None:
        start = time.perf_counter()
        fingerprint(ctx, thumbnail)
        spent[0] += time.perf_counter() - start

    similar.run = timed  # the thumbnail stage calls it through the module: time it there
    total = 0.0
    try:
        for path in files:
            ctx = FileContext(path=path, relpath=path.name, parameters=parameters, thumbnail_dir=thumbnails)
            start = time.perf_counter()
            try:
                for stage in stage_modules(parameters):
                    stage.run(ctx)
            except StageError:
                pass  # corrupted.jpg: an error entry in the pipeline, timed all the same
            finally:
                ctx.close()
            total += time.perf_counter() - start
    finally:
        similar.run = fingerprint
    return total, spent[0]


def bench_stages(rounds: int) -> None:
    files = sources(CORPUS)
    shares, per_file = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as thumbnails:
            total, hashing = stage_round(files, Path(thumbnails))
        shares.append(hashing / total)
        per_file.append((total / len(files), hashing / len(files)))
    print(f"stages: {len(files)} files x {rounds} rounds; per file (median): "
          f"all stages {statistics.median(p[0] for p in per_file) * 1000:.1f} ms, "
          f"fingerprint {statistics.median(p[1] for p in per_file) * 1000:.2f} ms, "
          f"share {statistics.median(shares) * 100:.1f} % (min {min(shares) * 100:.1f}, max {max(shares) * 100:.1f})")


def planted(count: int, distance: int, seed: int = 19) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=count, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=count,
                                                                                               dtype=np.uint64)
    for i in range(0, count - 1, 10):
        flips = rng.choice(64, size=int(rng.integers(1, distance + 1)), replace=False)
        hashes[i + 1] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    return hashes


def bench_grouping(count: int, distance: int, rounds: int) -> None:
    hashes = planted(count, distance)
    times, labels = [], None
    for _ in range(rounds):
        times.append(timed(lambda: group_hashes(hashes, distance)))
    labels = group_hashes(hashes, distance)
    found = sum(labels[i] == labels[i + 1] for i in range(0, count - 1, 10))
    print(f"grouping: {count} hashes at distance {distance}: {summary(times)}; "
          f"planted pairs found {found}/{len(range(0, count - 1, 10))}; {count - len(np.unique(labels))} merges")
    session = hashes[: 1000]
    times = [timed(lambda: HashIndex(hashes).within(session, distance)) for _ in range(rounds)]
    print(f"session: 1000 hashes against an exact index of {count} (build + probe): {summary(times)}")


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call: on a shared machine the CPU time
    is what the work itself took."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(times: list[tuple[float, float]]) -> str:
    return (f"median wall {statistics.median(t[0] for t in times):.2f} s, "
            f"CPU {statistics.median(t[1] for t in times):.2f} s ({len(times)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hashes", type=int, default=100_000)
    parser.add_argument("--distance", type=int, default=DEFAULT_DISTANCE)
    parser.add_argument("--only", choices=("stages", "grouping"))
    args = parser.parse_args()
    if args.only != "grouping":
        bench_stages(args.rounds)
    if args.only != "stages":
        bench_grouping(args.hashes, args.distance, max(1, args.rounds // 2))


if __name__ == "__main__":
    main()
