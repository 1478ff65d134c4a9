"""The per-file stages, each against files whose content and metadata the test wrote itself."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from iptcinfo3 import IPTCInfo
from PIL import ExifTags, Image, PngImagePlugin
from PIL.TiffImagePlugin import IFDRational

from ingestapp.core import limits
from ingestapp.core.parameters import IngestParameters
from ingestapp.stages import (
    STAGES,
    enabled_stages,
    identify,
    load,
    media,
    metadata,
    nsfw,
    stage_modules,
    thumbnail,
)
from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.xmp import parse_rating, parse_xmp

Base, GPS = ExifTags.Base, ExifTags.GPS
ALL_OFF = {"extract_metadata": False, "extract_keywords": False, "import_scores": False}


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def nsfw_model() -> None:
    nsfw.load_model()


def make_context(path: Path, thumbs: Path, **parameters: Any) -> FileContext:
    params = IngestParameters(directory=str(path.parent), **parameters)
    return FileContext(path=path, relpath=path.name, parameters=params, thumbnail_dir=thumbs)


def run_pipeline(path: Path, thumbs: Path, **parameters: Any) -> tuple[FileContext, list[tuple[str, str]]]:
    """Run the enabled stages like the job does: in order, stopping at the first failure."""
    ctx = make_context(path, thumbs, **parameters)
    for stage in stage_modules(ctx.parameters):
        try:
            stage.run(ctx)
        except Exception as exc:
            return ctx, [(stage.NAME, str(exc))]
    return ctx, []


def picture(size: tuple[int, int] = (200, 100), seed: int = 0) -> Image.Image:
    """A noisy gradient (not flat, so JPEG corner pixels are never exactly mid-gray)."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(30, 220, width)[None, :, None] + rng.integers(0, 30, (height, width, 3))
    return Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8), "RGB")


def camera_exif(**overrides: Any) -> Image.Exif:
    exif = Image.Exif()
    exif[Base.Make] = "Canon\x00"
    exif[Base.Model] = "  Canon EOS R5  "
    exif[Base.Orientation] = overrides.get("orientation", 1)
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    ifd[Base.DateTimeOriginal] = overrides.get("taken", "2024:05:01 12:30:45")
    if overrides.get("offset", "+02:00"):
        ifd[Base.OffsetTimeOriginal] = overrides.get("offset", "+02:00")
    ifd[Base.ExposureTime] = IFDRational(1, 250)
    ifd[Base.FNumber] = overrides.get("f_number", IFDRational(28, 10))
    ifd[Base.ISOSpeedRatings] = 400
    ifd[Base.FocalLength] = IFDRational(50, 1)
    ifd[Base.LensModel] = "RF50mm F1.8 STM"
    if overrides.get("gps", True):
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps[GPS.GPSLatitudeRef], gps[GPS.GPSLongitudeRef] = "S", "W"
        gps[GPS.GPSLatitude] = (IFDRational(33, 1), IFDRational(51, 1), IFDRational(3126, 100))
        gps[GPS.GPSLongitude] = (IFDRational(70, 1), IFDRational(40, 1), IFDRational(1250, 100))
        gps[GPS.GPSAltitudeRef] = b"\x01"
        gps[GPS.GPSAltitude] = IFDRational(4305, 10)
    return exif


def xmp_packet(body: str, rating_attribute: str = "") -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"'
        f' xmlns:digiKam="http://www.digikam.org/ns/1.0/" {rating_attribute}>{body}'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def bag(prop: str, *values: str) -> str:
    return f"<{prop}><rdf:Bag>{''.join(f'<rdf:li>{v}</rdf:li>' for v in values)}</rdf:Bag></{prop}>"


def write_video(path: Path, *, rotation: int | None = None, creation_time: str | None = None) -> Path:
    """1 s of 160x120 H.264 at 25 fps; ``rotation`` is the display matrix angle (counter-clockwise)."""
    with av.open(str(path), "w", format="mp4") as container:
        if creation_time:
            container.metadata["creation_time"] = creation_time
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index in range(25):
            frame = av.VideoFrame.from_image(picture((160, 120), seed=index))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def thumbs(tmp_path: Path) -> Path:
    return tmp_path / "thumbs"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    return media_dir


# --- stage list ---------------------------------------------------------------------------


def test_stage_order_and_options() -> None:
    everything = IngestParameters(directory="/")
    assert [s.name for s in STAGES] == ["identify", "metadata", "keywords", "scores", "nsfw", "thumbnail"]
    assert [load(s).NAME for s in STAGES] == [s.name for s in STAGES]  # each module is its stage
    assert enabled_stages(everything) == STAGES
    minimal = IngestParameters(directory="/", enable_nsfw_detection=False, **ALL_OFF)
    assert [s.name for s in enabled_stages(minimal)] == ["identify", "thumbnail"]
    only_scores = IngestParameters(directory="/", import_scores=True, extract_metadata=False)
    assert "scores" in [s.name for s in enabled_stages(only_scores)]
    assert "metadata" not in [s.name for s in enabled_stages(only_scores)]


# --- identify -----------------------------------------------------------------------------


def test_identify_fills_size_hash_type_and_dimensions(folder: Path, thumbs: Path) -> None:
    path = folder / "photo.jpg"
    picture((200, 100)).save(path, exif=camera_exif(orientation=6))
    ctx = make_context(path, thumbs)
    identify.run(ctx)
    data = path.read_bytes()
    assert ctx.item["size_bytes"] == len(data)
    assert ctx.item["sha256"] == hashlib.sha256(data).hexdigest()
    assert ctx.item["mime_type"] == "image/jpeg"
    assert (ctx.item["width"], ctx.item["height"]) == (200, 100)  # raw, before orientation
    assert ctx.cache["kind"] == "image"


def test_identify_trusts_content_not_extension(folder: Path, thumbs: Path) -> None:
    png_named_jpg = folder / "really_a_png.jpg"
    picture((30, 20)).save(png_named_jpg, format="PNG")
    mp4_named_mkv = write_video(folder / "clip.mkv")
    mp4_named_mov = write_video(folder / "clip.mov")
    results = {}
    for path in (png_named_jpg, mp4_named_mkv, mp4_named_mov):
        ctx = make_context(path, thumbs)
        identify.run(ctx)
        results[path.name] = (ctx.item["mime_type"], ctx.cache["kind"], ctx.item["width"])
    assert results == {
        "really_a_png.jpg": ("image/png", "image", 30),
        "clip.mkv": ("video/mp4", "video", 160),  # an MP4 container, whatever the name says
        "clip.mov": ("video/quicktime", "video", 160),  # same demuxer family: the extension refines
    }


def test_text_file_named_jpg_is_rejected(folder: Path, thumbs: Path) -> None:
    path = folder / "notes.jpg"
    path.write_text("this is not an image, just a note\n")
    ctx, errors = run_pipeline(path, thumbs)
    assert errors == [("identify", "unsupported or corrupt file: not a recognised image or video")]
    assert ctx.item["sha256"] is not None and ctx.item["mime_type"] is None


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_wider_than_4096_px_is_processed(folder: Path, thumbs: Path, suffix: str) -> None:
    """Scans, astro and medical exports (issue 16, point 5): Pillow's reduce() has no 16-bit mode,
    which thumbnail() reaches past ~4,096 px ("image has wrong mode"); the samples are scaled, not
    clipped at 255 (a mid-gray ramp stays mid-gray)."""
    ramp = np.tile(np.linspace(0, 65535, 5000, dtype=np.uint16), (3000, 1))
    path = folder / f"scan{suffix}"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    ctx, errors = run_pipeline(path, thumbs)
    assert errors == []
    assert (ctx.item["width"], ctx.item["height"]) == (5000, 3000)
    assert 0 <= ctx.item["nsfw_score"] <= 1
    with Image.open(thumbs / ctx.item["thumbnail"]) as thumbnail:
        assert 100 < np.asarray(thumbnail.convert("L")).mean() < 155


@pytest.mark.parametrize("pillow_format", ["PPM", "TGA"])
def test_image_formats_outside_the_accepted_list_are_rejected(
    folder: Path, thumbs: Path, pillow_format: str
) -> None:
    # Both Pillow and FFmpeg (ppm_pipe / image2 demuxers) could read these; neither may claim them.
    path = folder / "frame.jpg"
    picture((40, 30)).save(path, format=pillow_format)
    _ctx, errors = run_pipeline(path, thumbs)
    assert errors == [("identify", "unsupported or corrupt file: not a recognised image or video")]


def test_zero_byte_file(folder: Path, thumbs: Path) -> None:
    path = folder / "empty.jpg"
    path.touch()
    ctx, errors = run_pipeline(path, thumbs)
    assert errors == [("identify", "empty file (0 bytes)")]
    assert ctx.item["size_bytes"] == 0


def test_permission_denied(folder: Path, thumbs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder / "secret.jpg"
    picture().save(path)
    if os.geteuid() == 0:
        # root bypasses file modes, so make opening *this* file fail as chmod 000 would for a user.
        # Stages open the media file once, with os.open (FileContext.media).
        real_open = os.open

        def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if Path(os.fsdecode(file)) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("os.open", guarded_open)
    else:
        path.chmod(0)
    try:
        ctx, errors = run_pipeline(path, thumbs)
    finally:
        path.chmod(0o644)
    assert errors == [("identify", "permission denied")]
    assert ctx.item["sha256"] is None


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((40, 30), "image too large: 40×30 pixels exceeds the decompression-bomb limit"),  # noqa: RUF001
        ((100, 50), "image too large: more than 2000 pixels exceeds the decompression-bomb limit"),
    ],
    ids=["over-limit", "over-twice-the-limit"],
)
def test_decompression_bomb(
    folder: Path, thumbs: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], expected: str
) -> None:
    path = folder / "bomb.png"
    picture(size).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _ctx, errors = run_pipeline(path, thumbs)
    assert errors == [("identify", expected)]


# --- corrupt images -----------------------------------------------------------------------


def jpeg_bytes(image: Image.Image, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def test_truncated_jpeg_is_an_error(folder: Path, thumbs: Path) -> None:
    path = folder / "truncated.jpg"
    data = jpeg_bytes(picture((400, 300)), quality=90)
    path.write_bytes(data[: len(data) * 6 // 10])
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert len(errors) == 1
    stage, message = errors[0]
    assert stage == "identify"  # decoded once, early (issue 18): not filed under a later stage
    assert message.startswith("cannot decode the image: image file is truncated")
    assert ctx.item["mime_type"] == "image/jpeg"  # the header itself was fine
    assert not thumbs.exists() or not any(thumbs.rglob("*.jpg"))


def test_jpeg_whose_scan_ends_early_is_an_error(folder: Path, thumbs: Path) -> None:
    """An EOI marker mid-scan: libjpeg only warns and pads with gray, so Pillow alone says "fine"."""
    path = folder / "cut.jpg"
    data = jpeg_bytes(picture((400, 300)), quality=90)
    path.write_bytes(data[: len(data) * 6 // 10] + b"\xff\xd9")
    with Image.open(path) as im:
        im.load()  # no exception: this is what the stage has to detect by itself
        assert im.getpixel((399, 299)) == (128, 128, 128)
    _ctx, errors = run_pipeline(path, thumbs)
    assert errors == [("identify", "cannot decode the image: the JPEG scan data ends prematurely")]


def test_flat_mid_gray_jpeg_is_not_mistaken_for_truncated(folder: Path, thumbs: Path) -> None:
    path = folder / "gray.jpg"
    Image.new("RGB", (64, 48), (128, 128, 128)).save(path)
    ctx, errors = run_pipeline(path, thumbs)
    assert errors == []
    assert ctx.item["thumbnail"] is not None


# --- metadata -----------------------------------------------------------------------------


def test_exif_metadata_including_gps_south_west_below_sea_level(folder: Path, thumbs: Path) -> None:
    path = folder / "exif.jpg"
    picture().save(path, exif=camera_exif())
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == []
    assert ctx.item["metadata"] == {
        "make": "Canon",
        "model": "Canon EOS R5",
        "lens_model": "RF50mm F1.8 STM",
        "datetime_original": "2024-05-01T12:30:45+02:00",
        "exposure_time_s": pytest.approx(0.004),
        "f_number": pytest.approx(2.8),
        "iso": 400,
        "focal_length_mm": pytest.approx(50.0),
        "orientation": 1,
        "gps": {
            "latitude": pytest.approx(-(33 + 51 / 60 + 31.26 / 3600)),
            "longitude": pytest.approx(-(70 + 40 / 60 + 12.5 / 3600)),
            "altitude_m": pytest.approx(-430.5),
        },
        "duration_s": None,
        "video_codec": None,
        "fps": None,
    }


def test_exif_edge_values_become_none(folder: Path, thumbs: Path) -> None:
    path = folder / "odd.jpg"
    exif = camera_exif(taken="2024:13:45 99:61:00", offset="", f_number=IFDRational(0, 0), gps=False)
    picture().save(path, exif=exif)
    ctx, _ = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    fields = ctx.item["metadata"]
    assert (fields["datetime_original"], fields["f_number"], fields["gps"]) == (None, None, None)
    assert fields["iso"] == 400


@pytest.mark.parametrize(
    ("value", "offset", "expected"),
    [
        ("2024:05:01 12:30:45", None, "2024-05-01T12:30:45"),
        ("2024:05:01 12:30:45\x00", "-05:30", "2024-05-01T12:30:45-05:30"),
        ("2024:05:01 12:30:45", "garbage", "2024-05-01T12:30:45"),
        ("0000:00:00 00:00:00", "+01:00", None),
        ("    :  :     :  :  ", None, None),
        (b"2020:02:29 23:59:59", None, "2020-02-29T23:59:59"),
    ],
)
def test_exif_datetime(value: Any, offset: str | None, expected: str | None) -> None:
    assert metadata.exif_datetime(value, offset) == expected


def test_gps_zero_denominators_and_null_island_are_absent() -> None:
    broken = {
        GPS.GPSLatitudeRef: "N",
        GPS.GPSLatitude: (IFDRational(0, 0),) * 3,
        GPS.GPSLongitudeRef: "E",
        GPS.GPSLongitude: (IFDRational(12, 1), IFDRational(0, 1), IFDRational(0, 1)),
    }
    zeros = {GPS.GPSLatitude: (0.0, 0.0, 0.0), GPS.GPSLongitude: (0.0, 0.0, 0.0)}
    good = {**broken, GPS.GPSLatitude: (IFDRational(48, 1), IFDRational(30, 1), IFDRational(0, 1))}
    assert metadata.gps_position(broken) is None
    assert metadata.gps_position(zeros) is None
    assert metadata.gps_position(good) == {"latitude": 48.5, "longitude": 12.0, "altitude_m": None}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_garbage_exif_yields_none_fields_not_an_error(folder: Path, thumbs: Path) -> None:
    path = folder / "garbage_exif.jpg"
    garbage = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x40\x00" + bytes(range(256)) * 2
    picture().save(path, exif=garbage)
    ctx, errors = run_pipeline(path, thumbs)
    assert errors == []
    assert ctx.item["metadata"]["make"] is None and ctx.item["metadata"]["gps"] is None
    assert ctx.item["thumbnail"] is not None


def test_video_metadata_and_rotation(folder: Path, thumbs: Path) -> None:
    # A phone held upright: stored landscape, display matrix "turn 90° clockwise" (= -90° CCW).
    path = write_video(folder / "clip.mp4", rotation=-90, creation_time="2024-05-01T10:30:45.000000Z")
    ctx, errors = run_pipeline(path, thumbs)
    assert errors == []
    assert (ctx.item["mime_type"], ctx.item["width"], ctx.item["height"]) == ("video/mp4", 160, 120)
    fields = ctx.item["metadata"]
    assert fields["duration_s"] == pytest.approx(1.0, abs=0.05)
    assert fields["video_codec"] in ("h264", "mpeg4")
    assert fields["fps"] == pytest.approx(25.0)
    assert fields["datetime_original"] == "2024-05-01T10:30:45+00:00"
    assert fields["orientation"] == 6
    assert fields["make"] is None and fields["gps"] is None
    with Image.open(thumbs / ctx.item["thumbnail"]) as thumb:
        assert thumb.size == (120, 160)  # the rotation is honoured in the preview


# --- thumbnails ---------------------------------------------------------------------------


def test_thumbnail_applies_exif_orientation(folder: Path, thumbs: Path) -> None:
    path = folder / "sideways.jpg"
    stored = picture((640, 320))
    stored.paste((255, 0, 0), (0, 0, 64, 64))  # red marker in the stored top-left corner
    stored.save(path, exif=camera_exif(orientation=6), quality=95)
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == []
    with Image.open(thumbs / ctx.item["thumbnail"]) as thumb:
        assert thumb.size == (160, 320)
        # Orientation 6 = turn 90° clockwise to display: the stored top-left lands top-right.
        red, green, blue = thumb.convert("RGB").getpixel((thumb.width - 8, 8))
        assert red > 200 and green < 60 and blue < 60


def test_thumbnail_name_size_and_reuse(folder: Path, thumbs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder / "big.png"
    picture((1600, 1200)).save(path)
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    digest = ctx.item["sha256"]
    assert errors == []
    assert ctx.item["thumbnail"] == f"{digest[:2]}/{digest}.jpg"
    target = thumbs / ctx.item["thumbnail"]
    with Image.open(target) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (320, 240))
    assert sorted(p.name for p in target.parent.iterdir()) == [f"{digest}.jpg"]  # no temp files left

    # Same content again: the thumbnail exists, so nothing is decoded or re-encoded.
    mtime = target.stat().st_mtime_ns

    def no_decoding(_ctx: FileContext) -> Image.Image:
        raise AssertionError("preview() should not be needed")

    monkeypatch.setattr(thumbnail, "preview", no_decoding)
    again = make_context(path, thumbs)
    again.item["sha256"] = digest
    thumbnail.run(again)
    assert again.item["thumbnail"] == ctx.item["thumbnail"]
    assert target.stat().st_mtime_ns == mtime


def test_thumbnail_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ab" / "abcdef.jpg"

    def failing_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"\xff\xd8 half a JPEG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        thumbnail.write_jpeg_atomically(picture(), target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_preview_is_cached_rgb_and_bounded(folder: Path, thumbs: Path) -> None:
    path = folder / "rgba.png"
    Image.new("RGBA", (3000, 1000), (0, 0, 255, 0)).save(path)
    ctx = make_context(path, thumbs)
    identify.run(ctx)
    image = media.preview(ctx)
    assert image is media.preview(ctx)
    assert (image.mode, image.size) == ("RGB", (1024, 341))
    assert image.getpixel((10, 10)) == (255, 255, 255)  # transparency flattened onto white


# --- keywords, XMP, ratings ---------------------------------------------------------------


def test_embedded_xmp_keywords_and_rating(folder: Path, thumbs: Path) -> None:
    path = folder / "owl.jpg"
    body = bag("dc:subject", "owl", " bird ", "") + bag("lr:hierarchicalSubject", "Animals|Birds|Night Owl")
    body += bag("digiKam:TagsList", "Places/Europe/Black Forest")
    picture().save(path, xmp=xmp_packet(body, 'xmp:Rating="4"'))
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == []
    assert ctx.item["keywords"] == ["owl", "bird", "Night Owl", "Black Forest"]
    assert (ctx.item["rating"], ctx.item["score"], ctx.item["score_source"]) == (4, None, None)


def test_png_and_tiff_embedded_xmp(folder: Path, thumbs: Path) -> None:
    packet = xmp_packet(bag("dc:subject", "diagram"), 'xmp:Rating="2"')
    png = folder / "chart.png"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet.decode())
    picture().save(png, pnginfo=info)
    tiff = folder / "scan.tiff"
    picture().save(tiff, tiffinfo={700: packet + b"\x00\x00"})  # NUL padding as some writers do
    for path in (png, tiff):
        ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
        assert errors == []
        assert (ctx.item["keywords"], ctx.item["rating"]) == (["diagram"], 2)


def test_sidecars_both_namings_and_sidecar_rating_wins(folder: Path, thumbs: Path) -> None:
    path = folder / "forest.jpg"
    picture().save(path, xmp=xmp_packet(bag("dc:subject", "embedded"), 'xmp:Rating="1"'))
    (folder / "forest.jpg.xmp").write_bytes(
        xmp_packet(bag("dc:subject", "darktable") + "<xmp:Rating>5</xmp:Rating>")
    )
    (folder / "forest.xmp").write_bytes(xmp_packet(bag("lr:hierarchicalSubject", "Nature|Lightroom")))
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == []
    assert ctx.item["keywords"] == ["embedded", "darktable", "Lightroom"]
    assert ctx.item["rating"] == 5


def test_iptc_keywords_utf8_and_latin1(folder: Path, thumbs: Path) -> None:
    for name, charset in (("utf8.jpg", "utf_8"), ("latin1.jpg", "latin_1")):
        path = folder / name
        picture().save(path, exif=camera_exif())
        info = IPTCInfo(str(path), force=True, out_charset=charset)
        info["keywords"] = ["Möwe", "Hafen"]
        info.save()
        ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
        assert errors == []
        assert ctx.item["keywords"] == ["Möwe", "Hafen"], charset
        assert ctx.item["metadata"]["make"] == "Canon"  # EXIF survived the IPTC rewrite


def test_keywords_deduplicated_in_source_order(folder: Path, thumbs: Path) -> None:
    path = folder / "mix.jpg"
    picture().save(path, xmp=xmp_packet(bag("dc:subject", "a", "b")))
    info = IPTCInfo(str(path), force=True, out_charset="utf_8")
    info["keywords"] = ["b", "c", "C"]
    info.save()
    (folder / "mix.jpg.xmp").write_bytes(xmp_packet(bag("dc:subject", "c", "d")))
    (folder / "mix.xmp").write_bytes(xmp_packet(bag("digiKam:TagsList", "x/y/e")))
    (folder / "mix.txt").write_text(" e, f ,, a,\ng\n", encoding="utf-8")
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == []
    assert ctx.item["keywords"] == ["a", "b", "c", "d", "e", "f", "g"]  # "C" repeats "c"


def test_malformed_sidecar_is_an_error_but_malformed_embedded_xmp_is_ignored(
    folder: Path, thumbs: Path
) -> None:
    path = folder / "broken.jpg"
    picture().save(path, xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed>")
    (folder / "broken.txt").write_text("still, found")
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == []
    assert ctx.item["keywords"] == ["still", "found"]

    (folder / "broken.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>")
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert len(errors) == 1
    assert errors[0][0] == "keywords"
    assert errors[0][1].startswith("malformed XMP sidecar broken.xmp: ")


def test_xmp_entities_are_refused(folder: Path, thumbs: Path) -> None:
    path = folder / "laughs.jpg"
    picture().save(path)
    (folder / "laughs.xmp").write_text(
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "haha"><!ENTITY b "&a;&a;&a;&a;">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    )
    _ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors and errors[0][0] == "keywords"
    assert errors[0][1].startswith("malformed XMP sidecar laughs.xmp: ")


def test_a_sidecar_of_400000_keywords_keeps_500_and_says_so(folder: Path, thumbs: Path) -> None:
    """Issue 16, point 3: a real sidecar under the byte cap but holding 400,000 keywords (and one
    of 1,000 characters) gives an ok item with at most 500 keywords of at most 200 characters, a
    warning saying so, and the stages after keywords still run."""
    path = folder / "hoard.jpg"
    picture().save(path)
    long_keyword = "tag" * 333 + "!"
    hoard = [f"keyword {n}" for n in range(400_000)]
    rating = "<xmp:Rating>3</xmp:Rating>"
    (folder / "hoard.xmp").write_bytes(xmp_packet(bag("dc:subject", long_keyword, *hoard) + rating))
    assert 10_000_000 < (folder / "hoard.xmp").stat().st_size < limits.MAX_SIDECAR_BYTES
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == []
    keywords = ctx.item["keywords"]
    assert len(keywords) == limits.MAX_KEYWORDS == 500
    assert max(len(keyword) for keyword in keywords) <= limits.MAX_KEYWORD_LENGTH == 200
    assert keywords[0] == long_keyword[:199] + "\u2026" and keywords[1:3] == ["keyword 0", "keyword 1"]
    assert ctx.item["warnings"] == [
        "kept 500 of 400,001 keywords; 1 keyword over 200 characters was shortened"
    ]
    assert ctx.item["rating"] == 3 and ctx.item["thumbnail"]  # the scores and thumbnail stages ran


def test_keyword_caps_shorten_before_removing_duplicates_and_hold_once_applied() -> None:
    same_start = ["x" * 300 + "a", "X" * 300 + "b"]  # one keyword once both are cut to 200 characters
    kept, warning = limits.cap_keywords([" owl ", "Owl", "", *same_start])
    assert kept == ["owl", "x" * 199 + "\u2026"]
    assert warning == "1 keyword over 200 characters was shortened"
    assert limits.cap_keywords(kept) == (kept, None)  # the catalog commit caps again: nothing changes
    kept, warning = limits.cap_keywords(f"k{n}" for n in range(501))
    assert len(kept) == 500 and warning == "kept 500 of 501 keywords"


@pytest.mark.parametrize("sidecar", ["big.xmp", "big.txt"])
def test_a_sidecar_over_its_byte_cap_is_an_error_in_words(folder: Path, thumbs: Path, sidecar: str) -> None:
    path = folder / "big.jpg"
    picture().save(path)
    with (folder / sidecar).open("wb") as f:
        f.truncate(limits.MAX_SIDECAR_BYTES + 1)  # sparse: costs no disk
    _ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False)
    assert errors == [("keywords", f"sidecar {sidecar} is larger than 16,777,216 bytes: not read")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5),
        ("-1", -1),
        ("3.0", 3),
        ("0", 0),
        ("7", None),
        ("-2", None),
        ("nan", None),
        ("", None),
        ("x", None),
    ],
)
def test_parse_rating(text: str, expected: int | None) -> None:
    assert parse_rating(text) == expected


def test_parse_xmp_element_rating_and_plain_subject() -> None:
    fields = parse_xmp(xmp_packet("<xmp:Rating>2</xmp:Rating><dc:subject>solo</dc:subject>"))
    assert (fields.subjects, fields.rating) == (["solo"], 2)


# --- scores -------------------------------------------------------------------------------


def test_scores_from_json_then_csv(folder: Path, thumbs: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        picture().save(folder / name)
    (folder / "a.json").write_text(json.dumps({"score": 0.75}))
    (folder / "b.json").write_text(json.dumps({"aesthetic_score": 6}))
    (folder / "scores.csv").write_text("filename,score\na.jpg,0.1\nc.jpg, 0.33\nd.jpg.bak,0.9\n")
    results = {}
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        ctx, errors = run_pipeline(folder / name, thumbs, enable_nsfw_detection=False)
        assert errors == []
        results[name] = (ctx.item["score"], ctx.item["score_source"])
    assert results == {
        "a.jpg": (0.75, "json"),  # the JSON sidecar wins over the CSV row
        "b.jpg": (6.0, "json"),
        "c.jpg": (0.33, "csv"),
        "d.jpg": (None, None),  # filenames must match exactly
    }


@pytest.mark.parametrize(
    ("sidecar", "content", "message"),
    [
        ("e.json", "{score: 1", "malformed JSON sidecar e.json: "),
        ("e.json", "[0.5]", "malformed JSON sidecar e.json: expected an object"),
        ("e.json", '{"score": "high"}', "invalid score in e.json (score): 'high' is not a number"),
        ("scores.csv", "name,value\ne.jpg,1\n", "scores.csv has no 'filename,score' header"),
        (
            "scores.csv",
            "filename,score\ne.jpg,abc\n",
            "invalid score in scores.csv (e.jpg): 'abc' is not a number",
        ),
    ],
)
def test_score_errors(folder: Path, thumbs: Path, sidecar: str, content: str, message: str) -> None:
    picture().save(folder / "e.jpg")
    (folder / sidecar).write_text(content)
    _ctx, errors = run_pipeline(folder / "e.jpg", thumbs, enable_nsfw_detection=False)
    assert len(errors) == 1
    assert errors[0][0] == "scores"
    assert errors[0][1].startswith(message)


def test_scores_stage_alone_reads_xmp(folder: Path, thumbs: Path) -> None:
    path = folder / "rated.jpg"
    picture().save(path)
    (folder / "rated.xmp").write_bytes(xmp_packet("", 'xmp:Rating="3.0"'))
    ctx, errors = run_pipeline(path, thumbs, enable_nsfw_detection=False, extract_keywords=False)
    assert errors == []
    assert (ctx.item["rating"], ctx.item["score_source"], ctx.item["keywords"]) == (3, None, [])


# --- NSFW ---------------------------------------------------------------------------------


@pytest.fixture
def nsfw_files(folder: Path) -> Iterator[tuple[Path, Path]]:
    image = folder / "landscape.jpg"
    picture((320, 240)).save(image)
    yield image, write_video(folder / "clip.mp4")


def test_nsfw_scores_images_and_videos(nsfw_files: tuple[Path, Path], thumbs: Path) -> None:
    for path in nsfw_files:
        ctx, errors = run_pipeline(path, thumbs, nsfw_threshold=0.0, **ALL_OFF)
        assert errors == []
        score = ctx.item["nsfw_score"]
        assert isinstance(score, float) and 0.0 <= score <= 1.0
        assert score == round(score, 4)
        assert ctx.item["nsfw"] is True  # every score reaches a threshold of 0
        for threshold, expected in ((score, True), (score + 0.0001, False)):
            if threshold > 1.0:
                continue
            again = make_context(path, thumbs, nsfw_threshold=threshold)
            identify.run(again)
            nsfw.run(again)
            assert (again.item["nsfw_score"], again.item["nsfw"]) == (score, expected)


def test_nsfw_requires_the_model(
    nsfw_files: tuple[Path, Path], thumbs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nsfw, "_classifier", None)
    ctx = make_context(nsfw_files[0], thumbs)
    identify.run(ctx)
    with pytest.raises(StageError, match="NSFW model not loaded"):
        nsfw.run(ctx)
