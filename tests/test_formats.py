"""Issue 17: camera RAW, AVIF, JPEG XL and more videos, on real RAW files (exiftool's test set,
with exiftool's own reading as the reference) and on files the tests write (DNGs from a real
photo, AVIF, JPEG XL, a lying extension, a truncated RAW)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ingestapp.core.formats import FORMATS, MEDIA_EXTENSIONS, Reader, format_of, markdown_table
from ingestapp.core.parameters import DEFAULT_PATTERN, IngestParameters
from ingestapp.core.patterns import compile_patterns
from ingestapp.jobs.pairs import pair_up
from ingestapp.stages import nsfw, stage_modules
from ingestapp.stages.base import FileContext
from ingestapp.stages.media import PREVIEW_SIZE, THUMBNAIL_SIZE
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, SignedInBrowser, require_chromium
from tests.factories import start, wait_for
from tests.rawfiles import CORPUS, photo, write_dng
from tests.servers import gunicorn

RAW_SAMPLES = CORPUS / "raw-samples"
README = Path(__file__).resolve().parents[1] / "README.md"
#: What an error message must never show: an exception's own text instead of words.
LEAKS = re.compile(r"NoneType|has no attribute|Traceback|object is not|Error\(|errno", re.IGNORECASE)


@pytest.fixture(scope="module", autouse=True)
def nsfw_model() -> None:
    nsfw.load_model()


def run_stages(path: Path, thumbs: Path, **parameters: Any) -> tuple[FileContext, list[tuple[str, str]]]:
    """The enabled stages, in order, stopping at the first failure (as the stage process does)."""
    ctx = FileContext(path, path.name, IngestParameters(directory=str(path.parent), **parameters), thumbs)
    try:
        for stage in stage_modules(ctx.parameters):
            try:
                stage.run(ctx)
            except Exception as exc:
                return ctx, [(stage.NAME, str(exc))]
    finally:
        ctx.close()
    return ctx, []


def thumbnail_of(ctx: FileContext) -> Image.Image:
    with Image.open(ctx.thumbnail_dir / ctx.item["thumbnail"]) as im:
        return im.convert("RGB")


# --- the format table ----------------------------------------------------------------------


def test_default_pattern_covers_every_format_in_any_case() -> None:
    matches = compile_patterns(IngestParameters(directory="/").patterns)
    names = ["a/IMG_0001" + ext for ext in MEDIA_EXTENSIONS] + ["IMG_0001" + ext.upper() for ext in MEDIA_EXTENSIONS]
    assert [name for name in names if not matches(name)] == []
    assert not matches("notes.txt") and not matches("IMG_0001.CR2.xmp")
    for ext in (".cr2", ".cr3", ".crw", ".nef", ".arw", ".raf", ".rw2", ".mrw", ".iiq", ".x3f", ".avif", ".jxl",
                ".mts", ".m2ts", ".3gp", ".mpg", ".wmv", ".gpr", ".rwl"):
        assert f"**/*{ext}" in DEFAULT_PATTERN.split(","), ext


def test_one_table_gives_kind_mime_and_reader() -> None:
    assert format_of("IMG_0001.CR3").mime_type == "image/x-canon-cr3"
    assert format_of("x.NEF").reader == Reader.RAW and format_of("x.nef").kind == "image"
    assert format_of("clip.MTS").mime_type == "video/m2ts" and format_of("clip.mts").kind == "video"
    assert format_of("x.x3f").reader == Reader.NONE
    assert format_of("notes.txt") is None and format_of("README") is None
    extensions = [ext for fmt in FORMATS for ext in fmt.extensions]
    assert len(extensions) == len(set(extensions))  # one format per extension


def test_readme_shows_the_format_table() -> None:
    assert markdown_table() in README.read_text(encoding="utf-8")


# --- real RAW files: metadata against exiftool ---------------------------------------------


def exiftool_reading() -> dict[str, dict[str, Any]]:
    if not (RAW_SAMPLES / "exiftool.json").is_file():
        pytest.skip(f"RAW samples not found at {RAW_SAMPLES}")
    return {entry["SourceFile"]: entry for entry in json.loads((RAW_SAMPLES / "exiftool.json").read_text())}


@pytest.mark.parametrize("name", ["CanonRaw.cr2", "Nikon.nef", "DNG.dng"])
def test_raw_metadata_matches_exiftool(name: str, tmp_path: Path) -> None:
    """exiftool's test RAWs carry real metadata but (nearly) no pixels: the metadata is read, and pixels
    that cannot be decoded fail in words under identify, the stage that decodes."""
    reference = exiftool_reading()[name]
    ctx, errors = run_stages(RAW_SAMPLES / name, tmp_path)
    meta = ctx.item["metadata"]
    assert ctx.item["mime_type"] == reference["MIMEType"]
    assert (meta["make"], meta["model"]) == (reference["Make"], reference["Model"])
    assert meta["datetime_original"] == reference["DateTimeOriginal"].replace(":", "-", 2).replace(" ", "T")
    assert meta["iso"] == reference["ISO"]
    assert meta["exposure_time_s"] == pytest.approx(reference["ExposureTime"])
    assert meta["f_number"] == pytest.approx(reference["FNumber"])
    assert meta["focal_length_mm"] == pytest.approx(reference["FocalLength"])
    assert meta["orientation"] == reference["Orientation"]
    if name != "CanonRaw.cr2":  # exiftool's ImageWidth of a CR2 is IFD0's reduced image, not the sensor's
        assert (ctx.item["width"], ctx.item["height"]) == (reference["ImageWidth"], reference["ImageHeight"])
    if name == "DNG.dng":
        assert errors == []  # its stripped previews and raw data decode as black: an image, if a dull one
    else:
        assert [stage for stage, _ in errors] == ["identify"]
        assert errors[0][1].startswith("cannot decode the image: ") and not LEAKS.search(errors[0][1])


# --- RAW pixels -----------------------------------------------------------------------------


def test_dng_thumbnail_comes_from_its_embedded_preview_turned_by_its_orientation(tmp_path: Path) -> None:
    scene = photo()
    flat = Image.new("RGB", scene.size, (90, 90, 90))  # the RAW data: a demosaic would be flat gray
    path = write_dng(tmp_path / "IMG_0001.dng", flat, preview=scene.resize((800, 544)), orientation=6)
    ctx, errors = run_stages(path, tmp_path / "thumbs")
    assert errors == []
    assert ctx.item["mime_type"] == "image/x-adobe-dng"
    assert (ctx.item["width"], ctx.item["height"]) == scene.size
    thumb = thumbnail_of(ctx)
    assert thumb.height == THUMBNAIL_SIZE and thumb.width < thumb.height  # orientation 6: turned upright
    assert np.asarray(thumb).std() > 20  # the photo, not the flat RAW data
    meta = ctx.item["metadata"]
    assert (meta["make"], meta["model"], meta["orientation"]) == ("Canon", "Canon EOS 40D", 6)
    assert meta["datetime_original"] == "2025-06-07T08:09:10"
    assert 0.0 <= ctx.item["nsfw_score"] <= 1.0


def test_dng_without_a_large_enough_preview_is_demosaiced(tmp_path: Path) -> None:
    scene = photo()
    small = Image.new("RGB", (160, 109), (255, 0, 0))  # smaller than a thumbnail: not used
    path = write_dng(tmp_path / "IMG_0002.dng", scene, preview=small, orientation=8)
    ctx, errors = run_stages(path, tmp_path / "thumbs", enable_nsfw_detection=False)
    assert errors == []
    thumb = np.asarray(thumbnail_of(ctx)).astype(int)
    assert thumb.shape[0] == THUMBNAIL_SIZE and thumb.shape[1] < thumb.shape[0]  # LibRaw turned it
    assert thumb.std() > 20 and not (thumb[..., 0] > thumb[..., 1] + 100).all()  # the scene, not the red preview


def test_thumbnail_only_run_decodes_no_larger_than_the_thumbnail(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    photo((2400, 1632)).save(path, quality=90)
    ctx, errors = run_stages(path, tmp_path / "thumbs", enable_nsfw_detection=False)
    assert errors == [] and max(ctx.cache["preview"].size) <= THUMBNAIL_SIZE
    ctx, errors = run_stages(path, tmp_path / "thumbs2")
    assert errors == [] and max(ctx.cache["preview"].size) == PREVIEW_SIZE


@pytest.mark.parametrize(("suffix", "mime"), [(".avif", "image/avif"), (".jxl", "image/jxl")])
def test_avif_and_jpeg_xl_decode_like_any_image(suffix: str, mime: str, tmp_path: Path) -> None:
    path = tmp_path / f"photo{suffix}"
    photo((640, 436)).save(path, quality=80)
    ctx, errors = run_stages(path, tmp_path / "thumbs")
    assert errors == []
    assert (ctx.item["mime_type"], ctx.item["width"], ctx.item["height"]) == (mime, 640, 436)
    assert thumbnail_of(ctx).size == (320, 218)


# --- bad input --------------------------------------------------------------------------------


def test_a_jpeg_named_cr2_is_an_error_in_words(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0003.CR2"
    photo((400, 272)).save(path, format="JPEG")
    _ctx, errors = run_stages(path, tmp_path / "thumbs")
    message = "not a Canon RAW 2 (CR2) file: the content is image/jpeg (the file's extension is wrong)"
    assert errors == [("identify", message)]


def test_a_text_file_named_nef_is_an_error_in_words(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0004.NEF"
    path.write_text("these are not the pixels you are looking for\n" * 20)
    _ctx, errors = run_stages(path, tmp_path / "thumbs")
    assert len(errors) == 1 and errors[0][0] == "identify"
    assert errors[0][1].startswith("not a readable Nikon RAW (NEF) file: neither exiv2 nor LibRaw recognises")
    assert not LEAKS.search(errors[0][1])


def test_a_truncated_raw_is_an_error_in_words(tmp_path: Path) -> None:
    whole = write_dng(tmp_path / "whole.dng", photo())
    path = tmp_path / "IMG_0005.dng"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    ctx, errors = run_stages(path, tmp_path / "thumbs")
    assert len(errors) == 1 and errors[0][0] == "identify", errors
    assert errors[0][1].startswith("cannot decode the image: ") and not LEAKS.search(errors[0][1])
    assert ctx.item["metadata"]["model"] == "Canon EOS 40D"  # its header still tells


@pytest.mark.parametrize("name", ["IMG_0006.CR3", "IMG_0007.RAF", "IMG_0008.X3F"])
def test_raw_no_reader_understands_is_typed_and_reported_in_words(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(b"FOVb" + bytes(range(256)) * 64)  # an X3F's magic, then nothing that parses
    ctx, errors = run_stages(path, tmp_path / "thumbs")
    assert ctx.item["sha256"] and len(errors) == 1 and errors[0][0] == "identify"
    assert not LEAKS.search(errors[0][1]), errors
    if name.endswith(".X3F"):
        assert ctx.item["mime_type"] == "image/x-sigma-x3f"
        assert errors[0][1] == "Sigma RAW (X3F) files cannot be read: no installed reader understands this RAW format"


# --- sidecars ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sidecar", ["IMG_0009.dng.xmp", "IMG_0009.xmp"])
def test_xmp_sidecar_applies_to_a_raw(sidecar: str, tmp_path: Path) -> None:
    path = write_dng(tmp_path / "IMG_0009.dng", photo(), preview=photo((800, 544)))
    (tmp_path / sidecar).write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmp:Rating="4"><dc:subject><rdf:Bag><rdf:li>owl</rdf:li><rdf:li>night</rdf:li></rdf:Bag></dc:subject>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    ctx, errors = run_stages(path, tmp_path / "thumbs")
    assert errors == []
    assert ctx.item["keywords"] == ["owl", "night"] and ctx.item["rating"] == 4


# --- RAW+JPEG pairs, through the app -------------------------------------------------------------


def test_pair_up_matches_a_raw_with_its_developed_image() -> None:
    names = ["d/IMG_0001.CR2", "d/IMG_0001.JPG", "d/IMG_0001.heic", "d/IMG_0001.CR2.xmp"]
    assert pair_up(names) == {"d/IMG_0001.CR2": "d/IMG_0001.JPG", "d/IMG_0001.JPG": "d/IMG_0001.CR2"}
    assert pair_up(["IMG_1.nef", "img_1.jpeg"]) == {"IMG_1.nef": "img_1.jpeg", "img_1.jpeg": "IMG_1.nef"}
    assert pair_up(["IMG_1.jpg", "IMG_1.heic"]) == {}  # two developed images are no RAW+JPEG pair
    assert pair_up(["a.b.cr2", "a.jpg"]) == {}


def items_by_path(client: Any, session_id: str) -> dict[str, dict[str, Any]]:
    page = client.get(f"/api/ingest/{session_id}/items?limit=500").get_json()
    return {item["path"]: item for item in page["items"]}


def test_pairs_are_found_reviewed_and_imported_as_chosen(app: Any, client: Any, media: Path) -> None:
    card = media / "card"
    card.mkdir()
    scene = photo()
    write_dng(card / "IMG_0001.dng", scene, preview=scene.resize((800, 544)))
    scene.save(card / "IMG_0001.JPG", quality=90)
    write_dng(card / "IMG_0002.DNG", scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(card / "IMG_0002.jpeg", quality=90)
    scene.resize((600, 408)).save(card / "IMG_0003.jpg", quality=90)
    (card / "IMG_0002.xmp").write_text(  # Adobe's name.xmp: applies to both files of the pair
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>harbour</rdf:li>'
        "</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    copy = media / "copy"  # the same pair again: skipped as duplicates, paired with each other only
    copy.mkdir()
    for name in ("IMG_0001.dng", "IMG_0001.JPG"):
        (copy / name).write_bytes((card / name).read_bytes())
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed", "failed"}, timeout=120)
    assert state["status"] == "completed", state
    items = items_by_path(client, session_id)
    assert [item["errors"] for item in items.values() if item["errors"]] == []

    def partner(path: str) -> str | None:
        pair_id = items[path]["pair_id"]
        return next(p for p, item in items.items() if item["id"] == pair_id) if pair_id else None

    assert partner("card/IMG_0001.dng") == "card/IMG_0001.JPG" and partner("card/IMG_0001.JPG") == "card/IMG_0001.dng"
    assert partner("card/IMG_0002.DNG") == "card/IMG_0002.jpeg" and partner("card/IMG_0002.jpeg") == "card/IMG_0002.DNG"
    assert partner("copy/IMG_0001.dng") == "copy/IMG_0001.JPG" and partner("copy/IMG_0001.JPG") == "copy/IMG_0001.dng"
    assert partner("card/IMG_0003.jpg") is None
    for name in ("IMG_0001.dng", "IMG_0001.JPG"):  # whichever was hashed first is the original
        assert sorted(items[f"{folder}/{name}"]["status"] for folder in ("card", "copy")) == ["ok", "skipped"]
    assert items["card/IMG_0002.DNG"]["keywords"] == items["card/IMG_0002.jpeg"]["keywords"] == ["harbour"]
    assert items["card/IMG_0002.DNG"]["mime_type"] == "image/x-adobe-dng"

    review = client.get(f"/api/ingest/{session_id}/review").get_json()
    assert review["pairs"] == 3 and review["import_count"] == 5
    bad = client.post(f"/api/ingest/{session_id}/commit", json={"pairs": "tiff"})
    assert bad.status_code == 400 and bad.get_json()["field"] == "pairs"
    result = client.post(f"/api/ingest/{session_id}/commit", json={"pairs": "raw"}).get_json()
    assert result == {"added": 3, "updated": 0, "excluded": 2}  # both DNGs and the lone JPEG
    catalog = client.get("/api/catalog?limit=100").get_json()
    assert sorted(entry["path"].split("/")[1] for entry in catalog["items"]) == [
        "IMG_0001.dng", "IMG_0002.DNG", "IMG_0003.jpg"
    ]
    result = client.post(f"/api/ingest/{session_id}/commit", json={"pairs": "both"}).get_json()
    assert result == {"added": 2, "updated": 3, "excluded": 0}


@pytest.mark.browser
def test_review_page_shows_one_pair_card_and_imports_the_raw_only(tmp_path: Path) -> None:
    """A RAW+JPEG pair is one card naming both formats; "RAW only" then Import puts the DNG and the
    lone JPEG in the catalog, not the pair's JPEG (headless Chromium against the real gunicorn)."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    card = tmp_path / "media" / "card"
    card.mkdir(parents=True)
    scene = photo()
    write_dng(card / "IMG_0001.DNG", scene, preview=scene.resize((800, 544)))
    scene.save(card / "IMG_0001.JPG", quality=90)
    scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((600, 408)).save(card / "IMG_0002.jpg", quality=90)
    with gunicorn(tmp_path / "instance", tmp_path / "media", {"INGEST_WORKERS": "1"}) as server:
        status, answer = server.request("POST", "/api/ingest/process", {"parameters": {
            "directory": str(card), "enable_nsfw_detection": False}})
        assert status == 202, answer
        base = f"http://127.0.0.1:{server.port}"
        with sync_playwright() as playwright:
            browser = SignedInBrowser(playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS),
                                      base, server.username, server.password)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                script_errors: list[str] = []
                page.on("pageerror", lambda exc: script_errors.append(str(exc)))
                page.goto(f"{base}/ingest/{answer['session_id']}")
                page.locator("#status[data-status='completed']").wait_for(timeout=60_000)
                page.wait_for_function("() => document.getElementById('import').textContent === 'Import 3'",
                                       timeout=15_000)
                cards = page.locator("#preview-grid .item")
                cards.nth(1).wait_for()
                assert cards.count() == 2  # the pair's two files are one card
                pair = page.locator("#preview-grid .item", has=page.locator(".pair"))
                assert pair.locator(".pair").text_content() == "RAW+JPEG pair: DNG + JPG"
                assert pair.locator(".path").text_content() == "card/IMG_0001.JPG"  # the JPEG's thumbnail
                assert "1 RAW+JPEG pair" in page.text_content("#preview-summary")
                page.get_by_label("Of each RAW+JPEG pair, import").select_option(label="RAW only")
                page.locator("#import").click()
                page.get_by_role("link", name="Open the catalog").wait_for(timeout=15_000)
                assert "2 added, 0 updated, 1 excluded" in page.text_content("#import-result")
                assert script_errors == []
                browser.check_csp()
            finally:
                browser.close()
        status, catalog = server.request("GET", "/api/catalog?limit=100")
    assert status == 200
    assert sorted(entry["path"] for entry in catalog["items"]) == ["card/IMG_0001.DNG", "card/IMG_0002.jpg"]
