"""The sample-media generator: what it writes, and what the pipeline finds in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ingestapp.cli.samples import write_samples
from ingestapp.core.parameters import MEDIA_EXTENSIONS, IngestParameters
from ingestapp.stages import nsfw, stage_modules
from ingestapp.stages.base import FileContext

Result = tuple[FileContext, list[tuple[str, str]]]


def run_pipeline(path: Path, thumbs: Path) -> Result:
    """Every stage, in order, stopping at the first failure (as the job does)."""
    params = IngestParameters(directory=str(path.parent))
    ctx = FileContext(path=path, relpath=path.name, parameters=params, thumbnail_dir=thumbs)
    for stage in stage_modules(params):
        try:
            stage.run(ctx)
        except Exception as exc:
            return ctx, [(stage.NAME, str(exc))]
    return ctx, []


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict[str, Result]]:
    root = tmp_path_factory.mktemp("samples")
    written = write_samples(root)
    nsfw.load_model()
    thumbs = tmp_path_factory.mktemp("thumbs")
    results = {path.relative_to(root).as_posix(): run_pipeline(path, thumbs) for path in written}
    return root, written, results


def test_writes_media_and_sidecars(samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    root, written, _ = samples
    every_file = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert 12 <= len(every_file) <= 20
    assert all(path.is_file() and path.suffix.lower() in MEDIA_EXTENSIONS for path in written)
    media_files = {p.relative_to(root).as_posix() for p in written}
    assert set(every_file) - media_files == {
        "tagged/forest.jpg.xmp",
        "tagged/forest.xmp",
        "tagged/mountain.txt",
        "tagged/mountain.json",
        "tagged/scores.csv",
    }
    assert {"corrupt.jpg", "video/clip.mp4", "graphics/diagram.png"} <= media_files
    assert not any(name.endswith("~") for name in every_file)  # iptcinfo3's backup is removed


def test_is_deterministic(tmp_path: Path, samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    root, _, _ = samples
    again = tmp_path / "again"
    write_samples(again)
    for original in (p for p in root.rglob("*") if p.is_file()):
        copy = again / original.relative_to(root)
        assert copy.read_bytes() == original.read_bytes(), original.name


def test_only_the_corrupt_file_fails(samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    _, _, results = samples
    failures = {name: errors for name, (_ctx, errors) in results.items() if errors}
    assert list(failures) == ["corrupt.jpg"]
    stage, message = failures["corrupt.jpg"][0]
    assert stage == "identify" and message.startswith("cannot decode the image")
    for name, (ctx, _errors) in results.items():
        if name != "corrupt.jpg":
            item = ctx.item
            assert item["mime_type"] and item["width"] and item["thumbnail"], name
            assert 0.0 <= item["nsfw_score"] <= 1.0 and item["nsfw"] is False, name


def item(samples: tuple[Path, list[Path], dict[str, Result]], name: str) -> dict[str, Any]:
    return samples[2][name][0].item


def test_gps_where_written(samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    beach = item(samples, "camera/beach_sunset.jpg")["metadata"]["gps"]
    assert beach["latitude"] == pytest.approx(-22.951916, abs=1e-6)
    assert beach["longitude"] == pytest.approx(-43.210487, abs=1e-6)
    assert beach["altitude_m"] == pytest.approx(710.0)
    dead_sea = item(samples, "camera/dead_sea.jpg")["metadata"]["gps"]
    assert dead_sea["altitude_m"] == pytest.approx(-430.0)
    alpine = item(samples, "camera/alpine_portrait.jpg")["metadata"]["gps"]
    assert alpine["latitude"] > 0 and alpine["longitude"] > 0
    assert item(samples, "camera/night_street.jpg")["metadata"]["gps"] is None


def test_exif_fields(samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    beach = item(samples, "camera/beach_sunset.jpg")["metadata"]
    assert (beach["make"], beach["model"], beach["lens_model"]) == (
        "Canon",
        "Canon EOS R6",
        "RF24-105mm F4 L IS USM",
    )
    assert beach["datetime_original"] == "2023-12-28T19:42:10-03:00"
    assert (beach["exposure_time_s"], beach["f_number"], beach["iso"]) == (0.004, 8.0, 100)
    alpine = item(samples, "camera/alpine_portrait.jpg")
    assert alpine["metadata"]["datetime_original"] == "2022-08-14T07:05:33"  # no offset written
    assert alpine["metadata"]["orientation"] == 6
    assert (alpine["width"], alpine["height"]) == (1200, 900)


def test_rotated_photo_has_upright_thumbnail(samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    ctx, _ = samples[2]["camera/alpine_portrait.jpg"]
    with Image.open(ctx.thumbnail_dir / ctx.item["thumbnail"]) as thumb:
        assert thumb.size == (240, 320)
        pixels = np.asarray(thumb.convert("RGB"), dtype=np.float32)
    blueness = pixels[:, :, 2] - pixels[:, :, 0]
    # Upright means the blue sky is at the top and the gray hills at the bottom.
    assert blueness[:40].mean() > blueness[-40:].mean() + 40


def test_keywords_ratings_and_scores(samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    owl = item(samples, "tagged/owl.jpg")
    assert owl["keywords"] == ["owl", "bird", "night", "Forest"]  # "Owl" repeats "owl"
    assert (owl["rating"], owl["score"], owl["score_source"]) == (4, 0.82, "csv")
    harbour = item(samples, "tagged/harbour.jpg")
    assert harbour["keywords"] == ["harbour", "boats", "Möwe", "sea"]
    assert (harbour["rating"], harbour["score"], harbour["score_source"]) == (None, 0.47, "csv")
    forest = item(samples, "tagged/forest.jpg")
    assert forest["keywords"] == ["forest", "trees", "green", "Pine", "Autumn"]
    assert (forest["rating"], forest["score"]) == (5, None)
    mountain = item(samples, "tagged/mountain.jpg")
    assert mountain["keywords"] == ["mountain", "snow", "hiking", "summit"]
    assert (mountain["score"], mountain["score_source"]) == (0.91, "json")


def test_png_and_video(samples: tuple[Path, list[Path], dict[str, Result]]) -> None:
    diagram = item(samples, "graphics/diagram.png")
    assert (diagram["mime_type"], diagram["width"], diagram["height"]) == ("image/png", 800, 600)
    clip = item(samples, "video/clip.mp4")
    assert (clip["mime_type"], clip["width"], clip["height"]) == ("video/mp4", 320, 240)
    assert clip["metadata"]["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert clip["metadata"]["fps"] == pytest.approx(25.0)
    assert clip["metadata"]["datetime_original"] == "2024-06-01T09:15:00+00:00"
