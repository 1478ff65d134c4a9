"""The session page in every state (issue 18), in headless Chromium against the real gunicorn.

Each state leads with itself in the first screen (interrupted after a kill -9 with Resume,
cancelled, completed with its errors); the connection comes back live within 15 s of the server
answering; errors name their stage in a neutral chip; sizes follow the EXIF orientation; the pager,
keyword chips, the catalog's keyword field, an item over the keyword cap and a max_files run say and
do what they should.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ingestapp.core.vocabulary import LABELS
from tests.browser_support import (
    CuttableProxy,
    SignedInBrowser,
    assert_accessible,
    require_chromium,
    sign_in,
    signed_in_chromium,
    write_media,
)
from tests.factories import hoard_sidecar, write_jpegs
from tests.servers import gunicorn
from tests.test_browser import (
    LIVE_JS,
    SNAPSHOT_JS,
    App,
    in_first_screen,
    open_page,
    screenshot,
    shoot_both,
    wait_until,
    watch,
)

pytestmark = pytest.mark.browser

FILE_DELAY = 0.2
ENV = {"INGEST_FILE_DELAY": str(FILE_DELAY), "INGEST_WORKERS": "1", "INGEST_JOB_LEASE": "2"}
SIZES = ({"width": 1280, "height": 800}, {"width": 360, "height": 740})
ORIENTATION = 0x0112  # the EXIF Orientation tag (TIFF 6.0 / Exif 2.32)
TIMES = "\u00d7"  # the multiplication sign between width and height


def write_turned(path: Path, orientation: int, size: tuple[int, int] = (120, 80)) -> None:
    """A JPEG stored ``size`` (landscape) whose EXIF Orientation turns it (6, 8: a quarter turn)."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.new("RGB", size, (30 * orientation, 120, 90)).save(path, "JPEG", exif=exif, comment=str(path).encode())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("page-media")
    write_media(root / "samples", hostile=False)  # includes corrupt.jpg: a decode error
    (root / "turned").mkdir()
    for orientation in (1, 6, 8):
        write_turned(root / "turned" / f"o{orientation}.jpg", orientation)
    write_jpegs(root / "many", 30)  # two pages of the review grid
    write_jpegs(root / "long", 160)  # 32 s at FILE_DELAY: outlives a kill and a restart
    write_jpegs(root / "hoard", 1)  # with 600 keywords in its sidecar: over the cap of 500
    hoard_sidecar(root / "hoard" / "img_0000.xmp", [f"tag {n}" for n in range(600)])
    return root


@pytest.fixture(scope="module")
def site(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    require_chromium()
    with gunicorn(tmp_path_factory.mktemp("page-instance"), media, ENV) as server:
        proxy = CuttableProxy(server.port)
        try:
            yield App(server, proxy, media)
        finally:
            proxy.close()


@pytest.fixture(scope="module")
def browser(site: App) -> Iterator[SignedInBrowser]:
    with signed_in_chromium(site.base, site.server.username, site.server.password) as browser:
        yield browser


@pytest.fixture
def context(browser: SignedInBrowser) -> Iterator[Any]:
    context = browser.new_context(viewport=SIZES[0])
    try:
        yield context
    finally:
        context.close()
    browser.check_csp()


def lead(page: Any) -> str:
    """The lead line as read (what is shown): status, counts, errors."""
    return " ".join(page.inner_text(".lead").split())


def leads_at_both_sizes(page: Any, selectors: list[str], name: str) -> None:
    """Every selector is in the first screen at 1280x800 and at 360x740 (screenshots of both)."""
    for size in SIZES:
        page.set_viewport_size(size)
        page.evaluate("() => window.scrollTo(0, 0)")
        for selector in selectors:
            assert in_first_screen(page, selector), f"{selector} is not in the first screen at {size}"
    shoot_both(page, name)


# -- interrupted by a kill -9, back live, resumed ------------------------------------------------------


def test_interrupted_after_a_kill_leads_with_resume_and_goes_live(browser: SignedInBrowser, media: Path,
                                                                    tmp_path: Path) -> None:
    """kill -9 mid-job, 8 s down: the badge says Offline steadily; the restarted server's page is
    live within 15 s of it answering, leads with "Interrupted — N of 160 files done" and Resume in
    the first screen at both sizes, and Resume continues live."""
    instance = tmp_path / "instance"
    with gunicorn(instance, media, ENV) as first:
        proxy = CuttableProxy(first.port)  # one origin across the restart
        context = browser.new_context(viewport=SIZES[0])
        try:
            base = f"http://127.0.0.1:{proxy.port}"
            body = {"directory": str(media / "long"), "enable_nsfw_detection": False}
            session_id = first.request("POST", "/api/ingest/process", {"parameters": body})[1]["session_id"]
            page, script_errors = open_page(context)
            sign_in(page, base, first.username, first.password)
            page.goto(f"{base}/ingest/{session_id}")
            wait_until(page, f"() => Number(document.getElementById('files-done').textContent) >= 3 && {LIVE_JS}")
            first.kill_group()
            proxy.cut()
            page.locator("#connection[data-connection='offline']").wait_for(timeout=10_000)
            page.evaluate("""() => { const badge = document.getElementById('connection');
              window.__states = [badge.dataset.connection];
              new MutationObserver(() => window.__states.push(badge.dataset.connection))
                .observe(badge, {attributes: true, attributeFilter: ['data-connection']}); }""")
            page.wait_for_timeout(8000)  # long enough for any backoff to reach its cap
            assert set(page.evaluate("() => window.__states")) == {"offline"}, "the badge flickered while down"
            with gunicorn(instance, media, ENV) as second:
                answering = time.monotonic()
                proxy.retarget(second.port)
                try:
                    wait_until(page, f"() => {LIVE_JS}", timeout=20)
                    live_after = time.monotonic() - answering
                    print(f"\nlive {live_after:.1f} s after the restarted server answered")
                    assert live_after < 15
                    check_interrupted_then_resume(page, second, session_id)
                finally:
                    proxy.cut()
            assert script_errors == []
        finally:
            context.close()
            proxy.close()
    browser.check_csp()


def check_interrupted_then_resume(page: Any, server: Any, session_id: str) -> None:
    page.locator("#status[data-status='interrupted']").wait_for(timeout=15_000)
    state = server.request("GET", f"/api/ingest/status/{session_id}")[1]
    done = state["stats"]["processed_files"] + state["stats"]["skipped_duplicates"]
    assert lead(page).startswith(f"Interrupted — {done} of {state['total_files']} files done"), lead(page)
    leads_at_both_sizes(page, ["#status", "#lead-text", "#resume"], "interrupted")
    assert_accessible(page, "an interrupted session")
    page.get_by_role("button", name="Resume", exact=True).click()
    wait_until(page, "() => document.getElementById('status').dataset.status === 'processing'"
                     f" && {LIVE_JS} && Number(document.getElementById('files-done').textContent) > {done}")
    page.get_by_role("button", name="Cancel", exact=True).click()  # end the long job
    page.locator("#status[data-status='cancelled']").wait_for()


# -- cancelled, completed ----------------------------------------------------------------------------


def test_cancelled_leads_with_status_and_counts(site: App, context: Any) -> None:
    """"Cancelled after N of 160 files" first, then the review with Import N, both in the first screen."""
    session_id = site.start("long", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    wait_until(page, "() => Number(document.getElementById('files-done').textContent) >= 3")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator("#status[data-status='cancelled']").wait_for()
    final = site.state(session_id)
    done = final["stats"]["processed_files"] + final["stats"]["skipped_duplicates"]
    page.reload()  # as it opens later: the server renders the same lead
    assert lead(page) == f"Cancelled after {done} of {final['total_files']} files"
    page.get_by_role("button", name=f"Import {final['stats']['processed_files']}").wait_for()
    leads_at_both_sizes(page, ["#status", "#lead-text"], "cancelled")
    page.set_viewport_size(SIZES[0])
    assert in_first_screen(page, "#import"), "Import comes second, still in the first screen on a desktop"
    above = page.evaluate("() => document.getElementById('status').getBoundingClientRect().top"
                          " < document.getElementById('review').getBoundingClientRect().top")
    assert above, "the status must come before the review"
    assert page.text_content("#no-errors") == "No errors."
    assert script_errors == []


def test_completed_leads_with_errors_in_stage_chips(site: App, context: Any) -> None:
    """A finished session leads with its status, counts and errors; a corrupt JPEG's error shows
    the stage it failed in as a neutral chip, never styled like an NSFW flag."""
    session_id = site.start("samples", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    page.locator("#status[data-status='completed']").wait_for(timeout=30_000)
    final = site.state(session_id)
    errors = final["stats"]["errors"]
    assert errors > 0, "the samples include a corrupt JPEG"
    assert lead(page) == (f"Completed — {final['total_files']} of {final['total_files']} files "
                          f"{errors} error{'' if errors == 1 else 's'}")
    leads_at_both_sizes(page, ["#status", "#lead-errors"], "completed")
    page.set_viewport_size(SIZES[0])
    assert in_first_screen(page, "#import")

    corrupt = next(e for e in final["errors"] if e["file"].endswith("/corrupt.jpg"))
    row = page.locator("#error-list .error-row", has_text="corrupt.jpg")
    chip = row.locator(".stage-chip")
    assert chip.text_content() == LABELS["stage"][corrupt["stage"]]
    assert row.locator(".tag, .danger").count() == 0
    style = chip.evaluate("(c) => [getComputedStyle(c).color, getComputedStyle(c).backgroundColor]")
    flag = page.evaluate("""() => { const t = document.createElement('span'); t.className = 'tag danger';
      document.body.append(t); const s = getComputedStyle(t); const r = [s.color, s.backgroundColor]; t.remove();
      return r; }""")
    assert style != flag and style[0] != flag[0], "a stage chip must not look like the NSFW flag"
    page.get_by_role("link", name=re.compile(r"^\d+ errors?$")).click()
    page.wait_for_function("() => { const r = document.getElementById('errors-heading').getBoundingClientRect();"
                           " return r.top >= -1 && r.bottom <= window.innerHeight; }")
    assert page.locator("#no-errors").is_hidden()
    screenshot(page.locator("#error-list"), "error-chips.png")

    page.get_by_role("button", name=re.compile(r"^Errors")).click()
    card = page.locator("#preview-grid .item", has_text="corrupt.jpg")
    assert card.locator(".item-status .stage-chip").first.text_content() == LABELS["stage"][corrupt["stage"]]
    assert script_errors == []


# -- sizes, pager, keywords, max_files -----------------------------------------------------------------


def test_sizes_follow_the_exif_orientation(site: App, context: Any) -> None:
    """A 120x80 picture turned by orientation 6 or 8 reads 80x120 (card and dialog); 1 stays 120x80."""
    session_id = site.start("turned", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    page.locator("#status[data-status='completed']").wait_for(timeout=30_000)
    items = {i["path"].rsplit("/", 1)[1]: i for i in site.server.request(
        "GET", f"/api/ingest/{session_id}/items?limit=10")[1]["items"]}
    assert {name: (i["width"], i["height"], i["metadata"]["orientation"]) for name, i in items.items()} == {
        "o1.jpg": (120, 80, 1), "o6.jpg": (120, 80, 6), "o8.jpg": (120, 80, 8)}
    expected = {"o1.jpg": f"120{TIMES}80", "o6.jpg": f"80{TIMES}120", "o8.jpg": f"80{TIMES}120"}
    for name, pixels in expected.items():
        card = page.locator("#preview-grid .item", has_text=name)
        assert card.locator("dt:text-is('Pixels') + dd").text_content() == pixels, name
    page.get_by_role("button", name=f"Details of {items['o6.jpg']['path']}").click()
    assert f"80 {TIMES} 120" in page.get_by_role("dialog").text_content()
    page.keyboard.press("Escape")
    assert script_errors == []


def test_pager_scrolls_to_the_grid_and_max_files_says_what_the_folder_holds(site: App, context: Any) -> None:
    """Next brings the top of the grid into view; a run limited to 26 of 30 files says the folder holds 30."""
    session_id = site.start("many", max_files=26, skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    page.locator("#status[data-status='completed']").wait_for(timeout=30_000)
    assert site.state(session_id)["files_found"] == 30
    assert " ".join(page.text_content("#progress-text").split()).startswith(
        "26 / 26 files · the folder holds 30 (max files: 26)")
    page.reload()
    assert "the folder holds 30" in page.text_content("#files-found"), "the server-rendered page says it too"
    page.locator("#preview-page", has_text="Page 1 of 2").wait_for()
    page.get_by_role("button", name="Next").scroll_into_view_if_needed()
    page.get_by_role("button", name="Next").click()
    page.locator("#preview-page", has_text="Page 2 of 2").wait_for()
    page.wait_for_function("() => Math.abs(document.getElementById('preview').getBoundingClientRect().top) < 2")
    assert in_first_screen(page, "#preview-heading")
    assert script_errors == []


def test_keyword_chips_filter_the_catalog(site: App, context: Any) -> None:
    """After an import, a keyword chip opens the catalog filtered by it, and the catalog's Keyword
    field holds it (and filters by what is typed into it)."""
    session_id = site.start("samples", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    page.locator("#status[data-status='completed']").wait_for(timeout=30_000)
    page.get_by_role("button", name=re.compile(r"^Import \d+")).click()
    page.locator("#import-result", has_text="Imported").wait_for()
    owl = page.locator("#preview-grid .item", has_text="owl.jpg")
    chip = owl.get_by_role("link", name="owl", exact=True)
    assert chip.get_attribute("href").endswith("/catalog?keyword=owl")
    chip.click()
    page.wait_for_url(re.compile(r"/catalog\?keyword=owl$"))
    assert page.input_value("#keyword") == "owl"
    paths = page.locator("#catalog-grid figcaption").all_text_contents()
    assert paths and all(p.endswith("owl.jpg") for p in paths), paths
    page.get_by_role("link", name="owl", exact=True).first.click()  # the catalog's own chips link too
    page.wait_for_url(re.compile(r"/catalog\?keyword=owl$"))
    page.fill("#keyword", "")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"/catalog\?"))
    assert len(page.locator("#catalog-grid figcaption").all_text_contents()) > len(paths)
    assert_accessible(page, "the catalog with its keyword field")
    assert script_errors == []


def test_a_capped_item_says_so_and_lists_its_first_keywords(site: App, context: Any) -> None:
    """Issue 16, point 3: an item whose sidecar held 600 keywords keeps 500; its review card and
    its catalog card list the first 50 and "+450 more", and say the cut in words."""
    session_id = site.start("hoard", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    page.locator("#status[data-status='completed']").wait_for(timeout=30_000)
    warning = "kept 500 of 600 keywords"
    for grid in ("#preview-grid", "#catalog-grid"):
        if grid == "#catalog-grid":
            page.get_by_role("button", name=re.compile(r"^Import \d+")).click()
            page.locator("#import-result", has_text="Imported").wait_for()
            page.goto(f"{site.base}/catalog?keyword=tag+499")
        card = page.locator(f"{grid} .item", has_text="img_0000.jpg")
        card.locator(".more-keywords").wait_for()  # the review grid loads after the status
        assert card.locator(".more-keywords").inner_text() == "+450 more"
        assert card.locator(".keywords a.keyword").count() == 50, grid
        assert card.locator(".item-warning").inner_text() == warning
    assert_accessible(page, "a catalog card with a warning")
    assert script_errors == []


def test_progress_never_moves_backwards_on_a_slow_link(site: App, context: Any) -> None:
    """Network emulation at 400 kbit/s with 400 ms of latency (CDP): the page stays live and its
    counts only go up."""
    session_id = site.start("long", skip_duplicates=False)
    page, script_errors = open_page(context)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 400, "downloadThroughput": 400_000 / 8, "uploadThroughput": 400_000 / 8})
    page.goto(f"{site.base}/ingest/{session_id}")
    wait_until(page, f"() => {LIVE_JS}", timeout=30)
    # stream-early.js opened the stream while the page loaded (null once adopted, undefined if never opened)
    assert page.evaluate("() => window.IngestEarlyStream === null"), "the stream was not opened early and adopted"
    samples = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        samples.append(page.evaluate(SNAPSHOT_JS))
        page.wait_for_timeout(100)
    done = [s["done"] for s in samples]
    assert done == sorted(done) and done[-1] > done[0], "the progress moved backwards or stood still"
    assert all(s["live"] for s in samples), sorted({s["connection"] for s in samples})
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator("#status[data-status='cancelled']").wait_for()
    watch(page, timeout=10)
    assert script_errors == []
