"""The pages in headless Chromium against the real gunicorn: live progress, reconnection, preview.

The browser reaches gunicorn through ``CuttableProxy``, so a test can break every connection
the way a network drop would. Jobs are slowed with ``INGEST_FILE_DELAY`` to be watchable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingestapp.core.paths import display_path
from tests.browser_support import (
    ARTIFACTS,
    HOSTILE_NAMES,
    CuttableProxy,
    SignedInBrowser,
    assert_accessible,
    require_chromium,
    sign_in,
    signed_in_chromium,
    write_media,
)
from tests.factories import write_jpegs
from tests.servers import Server, gunicorn

pytestmark = pytest.mark.browser

FILE_DELAY = 0.2  # seconds per file: a 15-file job takes about 3.5 s with one worker
RUNNING = ("queued", "scanning", "processing")

#: What a test reads off the progress view, in one round trip.
SNAPSHOT_JS = """() => {
  const $ = (id) => document.getElementById(id);
  return {
    status: $('status').dataset.status,
    value: $('overall-bar').getAttribute('aria-valuenow'),
    done: Number($('files-done').textContent),
    processed: Number($('stat-processed_files').textContent),
    percent: $('percent').textContent,
    errorRows: document.querySelectorAll('#error-list .error-row').length,
    live: $('connection').dataset.connection === 'live',
    connection: $('connection').dataset.connection,
    t: performance.now(),
  };
}"""

#: Record every state of the connection badge (the test reads window.__states).
RECORD_STATES_JS = """() => {
  const badge = document.getElementById('connection');
  window.__states = [[performance.now(), badge.dataset.connection]];
  new MutationObserver(() => {
    const last = window.__states[window.__states.length - 1][1];
    if (badge.dataset.connection !== last) window.__states.push([performance.now(), badge.dataset.connection]);
  }).observe(badge, {attributes: true, attributeFilter: ['data-connection']});
}"""

LIVE_JS = "document.getElementById('connection').dataset.connection === 'live'"

ERROR_ROWS_JS = """() => [...document.querySelectorAll('#error-list .error-row')].map((row) => [
  row.querySelector('.path').textContent, row.querySelector('.stage-chip').textContent,
  row.querySelector('.message').textContent])"""


@dataclass
class App:
    """The server under test, the proxy the browser goes through, and the media root."""

    server: Server
    proxy: CuttableProxy
    media: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def start(self, directory: str, **parameters: Any) -> str:
        body = {"directory": str(self.media / directory), "enable_nsfw_detection": False, **parameters}
        status, answer = self.server.request("POST", "/api/ingest/process", {"parameters": body})
        assert status == 202, answer
        return answer["session_id"]

    def state(self, session_id: str) -> dict[str, Any]:
        return self.server.request("GET", f"/api/ingest/status/{session_id}")[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    require_chromium()
    media = tmp_path_factory.mktemp("browser-media")
    write_media(media / "flow")  # the sample set plus three broken files with hostile names
    write_media(media / "watch", copies=3, hostile=False)  # 45 files: about 9 s
    write_media(media / "tabs", copies=6, hostile=False)  # 72 files: outlasts the reload and tab opening under load
    write_media(media / "drop", copies=2, hostile=False, broken_per_copy=4)  # 30 files: 2 preview pages
    write_media(media / "resume", hostile=False)
    write_jpegs(media / "long", 160)  # 32 s at FILE_DELAY: outlives a server outage
    (media / "nsfw").mkdir()
    for name in ("beach_sunset.jpg", "dead_sea.jpg"):
        (media / "nsfw" / name).write_bytes((media / "flow" / "camera" / name).read_bytes())
    instance = tmp_path_factory.mktemp("browser-instance")
    env = {"INGEST_FILE_DELAY": str(FILE_DELAY), "INGEST_WORKERS": "1"}
    with gunicorn(instance, media, env) as server:
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
    """A signed-in browser context; the test fails if any page in any context broke the CSP."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context
    finally:
        context.close()
    browser.check_csp()


def open_page(context: Any, url: str | None = None) -> tuple[Any, list[str]]:
    """A new page (optionally at ``url``) and the list its uncaught script errors go to."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if url:
        page.goto(url)
    return page, errors


def watch(page: Any, timeout: float = 30, on_sample: Any = None) -> list[dict[str, Any]]:
    """Snapshots of the progress view every ~50 ms until the session is no longer running."""
    return watch_all([page], timeout, on_sample)[0]


def watch_all(pages: list[Any], timeout: float = 30, on_sample: Any = None) -> list[list[dict[str, Any]]]:
    """``watch`` several pages at once (round robin) until none shows a running session."""
    runs: list[list[dict[str, Any]]] = [[] for _ in pages]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for page, run in zip(pages, runs, strict=True):
            if not run or run[-1]["status"] in RUNNING:
                run.append(page.evaluate(SNAPSHOT_JS))
                if on_sample:
                    on_sample(run[-1])
        if all(run[-1]["status"] not in RUNNING for run in runs):
            return runs
        pages[0].wait_for_timeout(50)
    raise AssertionError(f"a page never showed the end: {[run[-1] for run in runs]}")


def wait_until(page: Any, predicate_js: str, timeout: float = 15) -> None:
    page.wait_for_function(predicate_js, timeout=timeout * 1000)


def server_errors(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((e["file"], e["stage"], e["message"]) for e in state["errors"])


def page_errors(page: Any) -> list[tuple[str, str, str]]:
    """The error rows as (file, stage, message), the stage mapped back to its API name."""
    names = {"Thumbnails": "thumbnail", "Identify": "identify", "Metadata": "metadata", "Keywords": "keywords",
             "Scores": "scores", "NSFW": "nsfw", "Scanning": "scanning"}
    return sorted((file, names.get(stage, stage), message) for file, stage, message in page.evaluate(ERROR_ROWS_JS))


def screenshot(target: Any, name: str, **options: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / name), **options)


def assert_fits(page: Any, width: int) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow}px wide at a {width}px viewport"


def shoot_both(page: Any, name: str) -> None:
    """Screenshots at 1280x800 and 360x740 (``name.png``, ``name-360.png``); the page must fit."""
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshot(page, f"{name}.png")
    page.set_viewport_size({"width": 360, "height": 740})
    assert_fits(page, 360)
    screenshot(page, f"{name}-360.png")
    page.set_viewport_size({"width": 1280, "height": 800})


def in_first_screen(page: Any, selector: str) -> bool:
    """The element is visible without scrolling."""
    return page.evaluate(
        """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
           return r.width > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }""",
        selector,
    )


# -- the whole flow -------------------------------------------------------------------------------


def test_form_errors_and_accessibility(site: App, context: Any) -> None:
    """Every control has a visible label; an API error shows next to its field."""
    page, script_errors = open_page(context, site.base + "/")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('#ingest-form input, #ingest-form select')]
             .filter((e) => ![...e.labels].some((l) => l.offsetParent !== null && l.textContent.trim()))
             .map((e) => e.id)"""
    )
    assert unlabelled == []
    assert page.get_by_role("button", name="Start").is_visible()
    assert not page.get_attribute("#directory", "placeholder").startswith("/"), "the placeholder looks like a value"
    assert_accessible(page, "the form")

    page.fill("#directory", "/etc")
    page.get_by_role("button", name="Start").click()
    error = page.locator("#error-directory")
    error.wait_for(state="visible")
    assert "outside the configured media roots" in error.text_content()
    assert page.get_attribute("#directory", "aria-invalid") == "true"
    assert page.url == site.base + "/"

    page.fill("#directory", str(site.media / "flow"))
    page.fill("#pattern", "[bad")
    page.get_by_role("button", name="Start").click()
    page.locator("#error-pattern").wait_for(state="visible")
    assert page.locator("#error-directory").is_hidden()
    page.fill("#pattern", "**/*.jpg")  # a change makes the stale error go
    assert page.locator("#error-pattern").is_hidden()
    assert page.get_attribute("#pattern", "aria-invalid") is None

    page.get_by_role("button", name="Browse…").click()
    page.locator("#browser-list button").first.click()
    flow = page.locator("#browser-list button", has_text=re.compile(r"^flow"))
    flow.wait_for()
    flat = len([p for p in (site.media / "flow").iterdir() if p.is_file()])
    assert flow.locator(".media-count").text_content() == f"{flat} media file{'' if flat == 1 else 's'}"
    flow.click()
    camera = page.locator("#browser-list button", has_text=re.compile(r"^camera"))
    camera.wait_for()
    assert re.fullmatch(r"\d+ media files", camera.locator(".media-count").text_content())

    shoot_both(page, "form")
    assert_accessible(page, "the form with the folder browser open")
    assert script_errors == []


@pytest.mark.serial
def test_live_progress_preview_and_import(site: App, context: Any) -> None:
    """Start from the form (keyboard only), watch it live, preview, exclude one, import."""
    page, script_errors = open_page(context, site.base + "/")
    choose_directory_with_keyboard(page, "flow")
    assert page.input_value("#directory") == str(site.media / "flow")
    page.focus("#enable_nsfw_detection")
    page.keyboard.press("Space")  # NSFW detection off: keeps the test fast
    assert not page.is_checked("#enable_nsfw_detection")

    clicked = time.monotonic()
    page.focus("#start")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ingest/[\w-]+$"))
    session_id = page.url.rsplit("/", 1)[1]
    page.evaluate(RECORD_STATES_JS)
    wait_until(page, "() => ['scanning', 'processing'].includes(document.getElementById('status').dataset.status)"
               f" && {LIVE_JS}")
    first_visible = time.monotonic() - clicked
    wait_until(page, "() => Number(document.getElementById('files-done').textContent) >= 1")
    first_file = time.monotonic() - clicked
    report = (f"Start click → live progress on screen: {first_visible * 1000:.0f} ms; "
              f"first file counted: {first_file * 1000:.0f} ms")
    print("\n" + report)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "start-latency.txt").write_text(report + "\n")
    assert first_visible < 1.0, "progress must show within a second of Start"

    shots: dict[str, bool] = {}

    def on_sample(sample: dict[str, Any]) -> None:
        if sample["status"] == "processing" and sample["done"] >= 8 and not shots:
            shots["desktop"] = True
            shots["strip"] = page.evaluate(
                "() => [...document.querySelectorAll('#strip img')].filter((i) => i.complete && i.naturalWidth).length")
            shots["workers"] = page.text_content("#pool")
            shoot_both(page, "progress")
            assert_accessible(page, "the live progress")

    samples = watch(page, on_sample=on_sample)
    running = [s for s in samples if s["status"] in RUNNING]
    assert shots, "the job ended before a screenshot could be taken"
    assert any(s["live"] for s in running), "the LIVE badge never showed while running"
    assert len({s["value"] for s in running}) >= 4, "the bar did not move while the job ran"
    processed = [s["processed"] for s in running]
    assert processed == sorted(processed) and len(set(processed)) >= 4, "the counters did not move while running"
    assert any(s["errorRows"] > 0 for s in running), "no error row appeared before the job ended"
    assert shots["strip"] >= 1, "no thumbnail reached the live strip while the job ran"
    assert shots["workers"] == "1 / 1", f"a processing job with one worker showed Workers {shots['workers']}"

    final = site.state(session_id)
    assert final["status"] == "completed"
    end = page.evaluate(SNAPSHOT_JS)
    assert end["percent"] == "100%" and end["value"] == "100"
    assert end["connection"] == "closed" and not end["live"]
    states = [state for _, state in page.evaluate("() => window.__states")]
    assert states[-2:] == ["live", "closed"] and set(states) <= {"reconnecting", "live", "closed"}, states
    assert states.count("live") == 1, f"the stream faltered without a network fault: {states}"
    assert page.locator(".connection").count() == 1, "one connection badge, not two"
    for key, value in final["stats"].items():
        assert page.text_content(f"#stat-{key}") == str(value), key
    assert page_errors(page) == server_errors(final)
    assert_escaped(page)

    check_preview_and_import(site, page, session_id, final)
    check_sessions_page(site, page, session_id)
    assert script_errors == []


def choose_directory_with_keyboard(page: Any, name: str) -> None:
    """Browse the media roots with Enter only: root → ``name`` → Use this folder."""
    page.focus("#browse-toggle")
    page.keyboard.press("Enter")
    # The roots are server-rendered, so they are visible before the script has fetched them and
    # moved the focus: wait for the focus, or Enter would close the browser again.
    page.wait_for_function("() => document.activeElement?.closest('#browser-list') !== null")
    page.keyboard.press("Enter")  # focus is on the first root
    target = page.locator("#browser-list button", has=page.locator(".folder-name", has_text=re.compile(rf"^{name}$")))
    target.wait_for()
    target.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.getElementById('browser-path').textContent.endsWith('/{name}')")
    page.focus("#browser-use")
    page.keyboard.press("Enter")


def assert_escaped(page: Any) -> None:
    """File names with quotes, <, & and newlines are shown as text, never as markup."""
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("#error-list b, #error-list img, #error-list script").count() == 0
    shown = {row[0] for row in page.evaluate(ERROR_ROWS_JS)}
    assert {f"flow/{display_path(name)}" for name in HOSTILE_NAMES} <= shown
    isolated = "() => [...document.querySelectorAll('.path, .message')].map((e) => getComputedStyle(e).unicodeBidi)"
    assert set(page.evaluate(isolated)) == {"isolate"}  # a bidi override in a name stays inside it


def check_preview_and_import(site: App, page: Any, session_id: str, final: dict[str, Any]) -> None:
    items = site.server.request("GET", f"/api/ingest/{session_id}/items?limit=100")[1]["items"]
    ok = [item for item in items if item["status"] == "ok"]
    with_thumbnails = [item for item in ok if item["thumbnail_url"]]
    assert with_thumbnails, "the samples should have thumbnails"

    assert in_first_screen(page, "#import"), "Import must be in the first screen"
    ok_count = len(ok)
    page.get_by_role("button", name=f"Import {ok_count}").wait_for()
    assert page.text_content("#count-errors") == str(final["stats"]["errors"])
    shoot_both(page, "review")
    page.set_viewport_size({"width": 360, "height": 740})
    assert in_first_screen(page, "#import"), "Import must be in the first screen at 360 px"
    page.set_viewport_size({"width": 1280, "height": 800})

    grid = page.locator("#preview-grid")
    grid.locator(".item").nth(len(items) - 1).wait_for()
    assert grid.locator(".item").count() == len(items) == final["total_files"]
    page.wait_for_function(
        f"""() => {{
          const images = [...document.querySelectorAll('#preview-grid img')];
          return images.length === {len(with_thumbnails)} && images.every((i) => i.complete && i.naturalWidth > 0);
        }}"""
    )
    assert_escaped(page)
    screenshot(page.locator("#preview"), "preview.png")
    assert_accessible(page, "the finished session")

    check_detail_dialog(page, next(item for item in ok if item["metadata"]["gps"]))
    check_filters(page, items)

    assert page.get_by_label("Import this file").count() == len(ok)
    excluded = next(item for item in ok if item["path"].endswith("gradient.png"))
    page.uncheck(f"#include-{excluded['id']}")
    page.get_by_role("button", name=f"Import {ok_count - 1}").click()
    result = page.locator("#import-result")
    result.filter(has_text="Imported").wait_for()
    assert re.match(rf"Imported \d{{4}}-\d\d-\d\d \d\d:\d\d — {ok_count - 1} added, 0 updated, 1 excluded",
                    result.text_content())
    assert page.locator("#import").is_hidden(), "a second import is offered though nothing changed"
    page.reload()
    page.locator("#import-result", has_text="Imported").wait_for()
    assert page.locator("#import").is_hidden()
    assert not page.is_checked(f"#include-{excluded['id']}"), "the exclusion was forgotten"

    page.get_by_role("link", name="Open the catalog").click()
    page.wait_for_url(re.compile(r"/catalog$"))
    paths = page.locator("#catalog-grid .item figcaption").all_text_contents()
    assert sorted(paths) == sorted(item["path"] for item in ok if item is not excluded)
    screenshot(page, "catalog.png", full_page=True)

    page.goto(site.base + "/catalog?keyword=owl")
    assert page.locator("#catalog-grid figcaption").all_text_contents() == ["flow/tagged/owl.jpg"]
    page.goto(site.base + "/catalog?min_rating=4")
    rated = sorted(page.locator("#catalog-grid figcaption").all_text_contents())
    assert rated == sorted(item["path"] for item in ok if (item["rating"] or -2) >= 4)
    check_catalog_search(site, page, [item for item in ok if item is not excluded])


def check_detail_dialog(page: Any, item: dict[str, Any]) -> None:
    """A card's Details opens a modal dialog with the full metadata; Escape gives the focus back."""
    opener = page.get_by_role("button", name=f"Details of {item['path']}")
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=item["path"])
    dialog.wait_for()
    assert page.evaluate("() => document.getElementById('detail').contains(document.activeElement)")
    text = dialog.text_content()
    turned = (item["metadata"]["orientation"] or 1) >= 5  # EXIF 5-8: shown a quarter turned
    width, height = (item["height"], item["width"]) if turned else (item["width"], item["height"])
    assert f"{item['size_bytes']:,} bytes" in text and f"{width} \u00d7 {height}" in text
    assert item["metadata"]["lens_model"] in text and "ISO" in text
    link = dialog.get_by_role("link", name="Open in a map")
    assert link.get_attribute("href").startswith("https://www.openstreetmap.org/?mlat=")
    shoot_both(page, "detail")
    assert_accessible(page, "the detail dialog")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.evaluate("(el) => document.activeElement === el", opener.element_handle())


def check_filters(page: Any, items: list[dict[str, Any]]) -> None:
    """The grid filters by status; select none / all act on the current filter only."""
    grid = page.locator("#preview-grid .item")
    page.get_by_role("button", name=re.compile(r"^Errors")).click()
    page.locator("#preview-summary", has_text=re.compile(r"^\d+ files?")).wait_for()
    errors = sorted(item["path"] for item in items if item["status"] == "error")
    page.wait_for_function(f"() => document.querySelectorAll('#preview-grid .item').length === {len(errors)}")
    assert sorted(grid.locator("figcaption").all_text_contents()) == errors
    page.get_by_role("button", name=re.compile(r"^New")).click()
    ok = [item for item in items if item["status"] == "ok"]
    page.wait_for_function(f"() => document.querySelectorAll('#preview-grid .item').length === {len(ok)}")
    page.get_by_role("button", name="Select none").click()
    page.locator("#import-result", has_text="Nothing to import").wait_for()
    assert page.locator("#import").is_hidden()
    page.wait_for_function("() => !document.querySelector('#preview-grid input:checked')")
    page.get_by_role("button", name="Select all").click()
    page.get_by_role("button", name=f"Import {len(ok)}").wait_for()
    page.get_by_role("button", name=re.compile(r"^All")).click()
    page.wait_for_function(f"() => document.querySelectorAll('#preview-grid .item').length === {len(items)}")


def check_catalog_search(site: App, page: Any, imported: list[dict[str, Any]]) -> None:
    """Search ignores case, matches parts of names, keywords and cameras; suggests keywords; an
    empty result says so and how to widen it."""
    def shown(query: str) -> list[str]:
        page.goto(f"{site.base}/catalog?{query}")
        return sorted(page.locator("#catalog-grid figcaption").all_text_contents())

    canon = sorted(i["path"] for i in imported if "canon" in f"{i['metadata']['make']}".lower())
    assert canon and shown("q=canon") == canon == shown("q=CANON")
    assert shown("q=OWL") == ["flow/tagged/owl.jpg"] == shown("q=tagged%2Fow")
    videos = sorted(i["path"] for i in imported if i["mime_type"].startswith("video/"))
    assert shown("media_type=video") == videos
    gps = sorted(i["path"] for i in imported if i["metadata"]["gps"])
    assert gps and shown("has_gps=true") == gps
    page.goto(f"{site.base}/catalog?sort=rating")
    by_path = {i["path"]: i["rating"] for i in imported}
    ratings = [by_path[path] for path in page.locator("#catalog-grid figcaption").all_text_contents()]
    known = [r for r in ratings if r is not None]
    assert known == sorted(known, reverse=True) and ratings[: len(known)] == known

    page.goto(site.base + "/catalog")
    page.fill("#q", "ow")
    page.wait_for_function("() => document.querySelectorAll('#keyword-suggestions option').length > 0")
    assert "owl" in page.eval_on_selector_all("#keyword-suggestions option", "(os) => os.map((o) => o.value)")
    page.fill("#q", "canon")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=canon"))
    shoot_both(page, "catalog-search")
    assert_accessible(page, "the catalog search")

    page.goto(site.base + "/catalog?q=zebra&has_gps=true")
    assert "No items match" in page.text_content("#no-results")
    assert page.get_by_role("link", name="clear everything").is_visible()
    assert_accessible(page, "an empty catalog search")


def check_sessions_page(site: App, page: Any, session_id: str) -> None:
    page.goto(site.base + "/sessions")
    row = page.locator("#sessions-body tr", has=page.locator(f"a[href$='/ingest/{session_id}']"))
    assert row.locator(".status").text_content() == "Completed"
    assert page.get_by_role("link", name=str(site.media / "flow")).count() == 1
    assert re.search(r"Imported \d{4}-\d\d-\d\d \d\d:\d\d — \d+ added, 0 updated, 1 excluded",
                     row.locator("td[data-label='Imported']").text_content())
    shoot_both(page, "sessions")
    assert_accessible(page, "the sessions list")


# -- reload, a second tab, polling -----------------------------------------------------------------


def test_reload_second_tab_and_polling(site: App, browser: Any, context: Any) -> None:
    """The page is right before scripts run, survives a reload, and every tab shows the same."""
    session_id = site.start("tabs", skip_duplicates=False)
    url = f"{site.base}/ingest/{session_id}"
    first, first_errors = open_page(context, url)
    wait_until(first, "() => Number(document.getElementById('files-done').textContent) >= 4")
    before = first.evaluate(SNAPSHOT_JS)

    no_script = browser.new_context(java_script_enabled=False)
    try:
        static = no_script.new_page()
        static.goto(url)
        rendered = int(static.text_content("#files-done"))
        assert rendered >= before["done"], "the server-rendered page is behind"
        assert static.text_content("#status") in ("Scanning", "Processing")
        assert static.get_attribute("#overall-bar", "aria-valuenow") not in (None, "0", "0.0")
    finally:
        no_script.close()

    first.reload(wait_until="domcontentloaded")
    assert first.evaluate(SNAPSHOT_JS)["done"] >= before["done"], "the reload went back in time"
    wait_until(first, f"() => Number(document.getElementById('files-done').textContent) > {rendered}")

    first.goto(site.base + "/sessions")
    first.go_back(wait_until="domcontentloaded")  # back/forward: the same session, live again
    shown = first.evaluate(SNAPSHOT_JS)["done"]
    wait_until(first, f"() => Number(document.getElementById('files-done').textContent) > {shown}")

    second, second_errors = open_page(context, url)
    second.locator("#connection[data-connection='live']").wait_for()

    polling_context = browser.new_context()
    try:
        polling_context.add_init_script("delete window.EventSource;")
        polled, polled_errors = open_page(polling_context, url)
        polled.locator("#fallback-note").wait_for(state="visible")
        assert "every second" in polled.text_content("#fallback-note")
        assert polled.evaluate(SNAPSHOT_JS)["connection"] == "polling"
        pages = [first, second, polled]
        runs = watch_all(pages)
        for run in runs:
            counts = [s["done"] for s in run if s["status"] in RUNNING]
            assert len(set(counts)) >= 2, f"a tab did not follow the job: {run[:3]} … {run[-1:]}"
        final = site.state(session_id)
        for page in pages:
            end = page.evaluate(SNAPSHOT_JS)
            assert (end["status"], end["percent"], end["processed"]) == ("completed", "100%", final["processed_files"])
            assert page_errors(page) == server_errors(final)
        assert first_errors == second_errors == polled_errors == []
    finally:
        polling_context.close()


def check_pagination(page: Any, total: int) -> None:
    """24 items a page; exclusions survive paging."""
    grid = page.locator("#preview-grid .item")
    page.locator("#preview-page", has_text="Page 1 of 2").wait_for()
    assert grid.count() == 24
    page.get_by_role("button", name="Next").click()
    page.locator("#preview-page", has_text="Page 2 of 2").wait_for()
    assert grid.count() == total - 24
    page.get_by_label("Import this file").first.uncheck()
    page.locator("#preview-summary", has_text="1 excluded").wait_for()
    page.get_by_role("button", name="Previous").click()
    page.locator("#preview-page", has_text="Page 1 of 2").wait_for()
    assert "1 excluded" in page.text_content("#preview-summary")


# -- a dropped connection ----------------------------------------------------------------------------


def test_reconnects_after_connection_drop(site: App, context: Any) -> None:
    """Cut every connection and refuse new ones for 2.5 s: the page reconnects by itself and
    catches up (Last-Event-ID) without losing one error row, and never falls back to polling."""
    session_id = site.start("drop", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    wait_until(page, f"() => Number(document.getElementById('files-done').textContent) >= 4 && {LIVE_JS}")
    page.evaluate(RECORD_STATES_JS)  # from live on
    accepted = site.proxy.accepted
    cut_at = time.time()
    site.proxy.cut(refuse_for=2.5)
    wait_until(page, "() => window.__states.some(([, s]) => s === 'reconnecting')", timeout=5)
    wait_until(page, "() => { const i = window.__states.findIndex(([, s]) => s === 'reconnecting');"
               " return window.__states.slice(i).some(([, s]) => s === 'live'); }", timeout=15)
    back_at = time.time()
    print(f"\nreconnected {back_at - cut_at:.2f} s after the cut")

    watch(page)
    final = site.state(session_id)
    assert final["status"] == "completed"
    states = [state for _, state in page.evaluate("() => window.__states")]
    assert "polling" not in states, states
    assert site.proxy.accepted > accepted, "the browser did not reconnect through the proxy"
    missed = [e for e in final["errors"] if cut_at <= e["time"] <= back_at]
    assert missed, "no error happened while disconnected: the test proves nothing"
    assert page_errors(page) == server_errors(final)
    assert page.text_content("#stat-errors") == str(final["stats"]["errors"]) == str(len(final["errors"]))
    assert page.evaluate(SNAPSHOT_JS)["percent"] == "100%"
    check_pagination(page, final["total_files"])
    assert script_errors == []


def test_buffering_proxy_falls_back_to_polling(site: App, context: Any) -> None:
    """Behind a proxy that holds the event stream back, the page notices within seconds, says
    so, polls the status every second, and still ends exact."""
    proxy = CuttableProxy(site.server.port, hold_streams=True)
    try:
        session_id = site.start("watch", skip_duplicates=False)
        page, script_errors = open_page(context, f"http://127.0.0.1:{proxy.port}/ingest/{session_id}")
        page.evaluate(RECORD_STATES_JS)
        page.locator("#fallback-note").wait_for(state="visible", timeout=10_000)
        assert "buffering proxy" in page.text_content("#fallback-note")
        assert page.evaluate(SNAPSHOT_JS)["connection"] == "polling"
        samples = watch(page)
        assert len({s["done"] for s in samples}) >= 2, "polling did not update the page"
        final = site.state(session_id)
        end = page.evaluate(SNAPSHOT_JS)
        assert (end["status"], end["percent"], end["processed"]) == ("completed", "100%", final["processed_files"])
        assert page_errors(page) == server_errors(final)
        assert script_errors == []
    finally:
        proxy.close()


# -- cancel, resume after a restart, NSFW ---------------------------------------------------------


def test_cancel(site: App, context: Any) -> None:
    """Cancel stops a running job; the page ends on "Cancelled" and previews what was done.
    The bar's transition honours prefers-reduced-motion."""
    session_id = site.start("watch", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    wait_until(page, "() => Number(document.getElementById('files-done').textContent) >= 2")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator("#status[data-status='cancelled']").wait_for()
    final = site.state(session_id)
    assert final["status"] == "cancelled" and final["processed_files"] < final["total_files"]
    assert page.locator("#cancel").is_hidden() and page.locator("#resume").is_hidden()
    assert page.evaluate(SNAPSHOT_JS)["connection"] == "closed"
    assert all(stage["status"] in ("completed", "cancelled") for stage in final["stages"].values()), final["stages"]
    stage_texts = page.locator("#stages .stage-status").all_text_contents()
    assert "Running" not in stage_texts and "Cancelled" in stage_texts, stage_texts
    assert [page.text_content(f"#{key}") for key in ("eta", "pool", "pool-queue")] == ["—", "—", "—"]
    page.reload()  # the server-rendered page says the same
    assert "Running" not in page.locator("#stages .stage-status").all_text_contents()
    assert page.text_content("#pool") == "—"
    page.locator("#preview-grid .item").first.wait_for()
    assert page.locator("#preview-grid .item").count() == final["stats"]["processed_files"]

    fill = "() => getComputedStyle(document.querySelector('#overall-bar .bar-fill')).transitionDuration"
    assert page.evaluate(fill) != "0s"  # the bar glides...
    page.emulate_media(reduced_motion="reduce")
    assert page.evaluate(fill) == "0s"  # ...unless the user asked for less motion
    assert script_errors == []


def test_resume_after_server_restart(site: App, context: Any, tmp_path: Path) -> None:
    """A restart interrupts the job; the open page notices, offers Resume, and follows it to the end."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = {"INGEST_FILE_DELAY": str(FILE_DELAY), "INGEST_WORKERS": "1"}
    with gunicorn(instance, site.media, env) as first:
        proxy = CuttableProxy(first.port)  # the browser's origin stays the same across the restart
        try:
            body = {"directory": str(site.media / "resume"), "enable_nsfw_detection": False}
            session_id = first.request("POST", "/api/ingest/process", {"parameters": body})[1]["session_id"]
            page, script_errors = open_page(context)
            sign_in(page, f"http://127.0.0.1:{proxy.port}", first.username, first.password)  # another instance
            page.goto(f"http://127.0.0.1:{proxy.port}/ingest/{session_id}")
            wait_until(page, "() => Number(document.getElementById('files-done').textContent) >= 3")
            first.process.terminate()  # what systemd's stop does
            # Like nginx (a new upstream connection per request), let no browser connection outlive
            # the stopping server: a kept-alive one would carry the stream's reconnection to it.
            proxy.cut()
            first.process.wait(timeout=15)
            with gunicorn(instance, site.media, env) as second:
                proxy.retarget(second.port)
                try:
                    resume_and_finish(page, second, session_id)
                finally:
                    proxy.cut()  # the same for the second server's stop
            assert script_errors == []
        finally:
            proxy.close()


def resume_and_finish(page: Any, server: Server, session_id: str) -> None:
    page.locator("#status[data-status='interrupted']").wait_for(timeout=15_000)
    assert page.locator("#cancel").is_hidden()
    stopped = server.request("GET", f"/api/ingest/status/{session_id}")[1]
    assert "running" not in {stage["status"] for stage in stopped["stages"].values()}, stopped["stages"]
    assert stopped["timing"]["estimated_remaining_ms"] is None and stopped["worker_pool"]["active"] == 0
    page.wait_for_function("() => ![...document.querySelectorAll('#stages .stage-status')]"
                           ".some((s) => s.textContent === 'Running')")
    assert "Interrupted" in page.locator("#stages .stage-status").all_text_contents()
    assert page.text_content("#eta") == "—" and page.text_content("#pool") == "—"
    page.get_by_role("button", name="Resume", exact=True).click()
    wait_until(page, "() => document.getElementById('status').dataset.status !== 'interrupted'")
    watch(page)
    final = server.request("GET", f"/api/ingest/status/{session_id}")[1]
    assert final["status"] == "completed"
    end = page.evaluate(SNAPSHOT_JS)
    assert (end["status"], end["percent"]) == ("completed", "100%")
    for key, value in final["stats"].items():
        assert page.text_content(f"#stat-{key}") == str(value), key
    assert page_errors(page) == server_errors(final)


def test_nsfw_thumbnails_are_blurred_until_clicked(site: App, context: Any) -> None:
    """With threshold 0 every image is labelled NSFW: blurred in the preview until activated."""
    session_id = site.start("nsfw", enable_nsfw_detection=True, nsfw_threshold=0.0, skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    page.locator("#status[data-status='completed']").wait_for(timeout=30_000)
    assert page.text_content("#stat-nsfw_detected") == "2"
    thumbs = page.locator("#preview-grid .nsfw-thumb")
    thumbs.nth(1).wait_for()
    blur = "(b) => getComputedStyle(b.querySelector('img')).filter"
    assert "blur" in thumbs.first.evaluate(blur)
    thumbs.first.focus()
    page.keyboard.press("Enter")
    assert thumbs.first.get_attribute("aria-pressed") == "true"
    page.wait_for_function(f"(b) => ({blur})(b) === 'none'", arg=thumbs.first.element_handle())
    assert "blur" in thumbs.nth(1).evaluate(blur)
    thumbs.first.click()
    assert thumbs.first.get_attribute("aria-pressed") == "false"
    assert script_errors == []


# -- a pattern that matches nothing; the live view coming back after an outage ------------------------


def test_pattern_matching_nothing(site: App, context: Any) -> None:
    """No Import and no 100% promise: the page says nothing matched and links back to the form."""
    session_id = site.start("flow", pattern="**/*.nomatch")
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    note = page.locator("#no-match")
    note.wait_for()
    assert f"No files matched **/*.nomatch in {site.media / 'flow'}" in " ".join(note.text_content().split())
    assert page.locator("#import").is_hidden() and page.locator("#preview").is_hidden()
    assert "**/*.nomatch" in page.text_content("#parameters")
    shoot_both(page, "no-match")
    assert_accessible(page, "a session that matched nothing")
    note.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/\?"))
    assert page.input_value("#directory") == str(site.media / "flow")
    assert page.input_value("#pattern") == "**/*.nomatch"
    assert script_errors == []


def test_live_view_comes_back_after_an_outage(site: App, context: Any) -> None:
    """The server is unreachable for 14 s: the page says so prominently and steadily (Offline, no
    flicker through Reconnecting or Polling while it is down), disables Cancel, and is live again
    within 15 s of the server answering."""
    session_id = site.start("long", skip_duplicates=False)
    page, script_errors = open_page(context, f"{site.base}/ingest/{session_id}")
    page.evaluate(RECORD_STATES_JS)
    wait_until(page, f"() => Number(document.getElementById('files-done').textContent) >= 2 && {LIVE_JS}")
    site.proxy.cut(refuse_for=14)
    back = time.monotonic() + 14
    page.locator("#connection[data-connection='offline']").wait_for(timeout=10_000)
    assert page.locator("#offline-banner").is_visible() and page.is_disabled("#cancel")
    shoot_both(page, "offline")
    page.wait_for_timeout(max(0, (back - time.monotonic() - 0.5) * 1000))
    while_down = [state for _, state in page.evaluate("() => window.__states")]
    first_offline = while_down.index("offline")
    assert while_down[first_offline:] == ["offline"], f"the badge flickered while the server was down: {while_down}"
    wait_until(page, f"() => {LIVE_JS}", timeout=20)
    live_after = time.monotonic() - back
    print(f"\nlive again {live_after:.1f} s after the server came back")
    assert live_after < 15
    assert page.locator("#offline-banner").is_hidden() and page.is_enabled("#cancel")
    page.get_by_role("button", name="Cancel", exact=True).click()  # end the long job
    page.locator("#status[data-status='cancelled']").wait_for()
    assert script_errors == []
