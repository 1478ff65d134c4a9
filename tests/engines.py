"""One small browser driver for three engines: Chromium (Playwright), Firefox ESR (Marionette) and
WebKitGTK (WebKitWebDriver + MiniBrowser, through Selenium's WebKitGTK driver).

The cross-engine tests (tests/test_engines.py) and the page-latency bench (bench/page_latency.py)
speak only this layer: ``launch(name)`` gives a ``Browser``, ``Browser.new_tab()`` a ``Tab`` with
``goto``, ``click``, ``fill``, ``evaluate``, ``wait``, ``wait_for_selector``, ``wait_for_text``,
``screenshot`` (the classes: tests/engine_tabs.py). Every tab of a browser shares its cookies
(one sign-in per browser).

System binaries (Debian): /usr/bin/chromium, /usr/bin/firefox-esr, /usr/bin/WebKitWebDriver and
the MiniBrowser of webkit2gtk-driver's libwebkit2gtk. MiniBrowser needs an X display: when there
is none (no ``DISPLAY``), ``launch("webkitgtk")`` starts Xvfb on a free display number
(``-displayfd``) for as long as the browser runs. Firefox runs headless (``MOZ_HEADLESS``).

No engine gets a GPU here, and each is set up for that: Chromium ``--disable-gpu``, Firefox
headless, WebKitGTK painting with Skia on the CPU (``WEBKIT_ENV``), the mode WebKit advises where
the GPU is weak. By default WebKitGTK would also paint through OpenGL, here on Mesa's llvmpipe, a
GPU emulated on the CPU: 30-37 ms a frame for the session page (docs/benchmarks.md section 10).
It still composites through llvmpipe: without compositing (``WEBKIT_DISABLE_COMPOSITING_MODE=1``)
frames cost less again, but WebKitWebDriver's screenshots hung in 2 of 2 full parallel runs.
A caller's own ``WEBKIT_SKIA_ENABLE_CPU_RENDERING`` wins (``=0`` measures the default).
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require, require_chromium
from tests.engine_tabs import (
    VIEWPORT,
    Browser,
    MarionetteBrowser,
    PlaywrightBrowser,
    SeleniumBrowser,
    Tab,
)

__all__ = ["ENGINES", "Browser", "PlaywrightBrowser", "Tab", "launch", "minibrowser", "require_engine", "sign_in"]

ENGINES = ("chromium", "firefox", "webkitgtk")
FIREFOX = Path("/usr/bin/firefox-esr")
WEBKIT_DRIVER = Path("/usr/bin/WebKitWebDriver")
MINIBROWSER_GLOB = "/usr/lib/*-linux-gnu/webkit2gtk-4.*/MiniBrowser"
XVFB = Path("/usr/bin/Xvfb")
COMMAND_TIMEOUT = 90  # seconds a WebKitWebDriver command may take
#: WebKitGTK where there is no GPU (the module docstring); the caller's environment wins.
WEBKIT_ENV = {"WEBKIT_SKIA_ENABLE_CPU_RENDERING": "1"}

# -- availability and launch --------------------------------------------------------------------------


def minibrowser() -> Path | None:
    found = sorted(glob.glob(MINIBROWSER_GLOB))
    return Path(found[-1]) if found else None


def require_engine(engine: str) -> None:
    """Skip when an engine's binaries or Python driver are missing; fail under INGEST_REQUIRE_SYSTEM_TOOLS=1."""
    if engine == "chromium":
        require_chromium()
        return
    if engine == "firefox":
        require(FIREFOX.is_file(), f"{FIREFOX} is not installed (apt-get install firefox-esr)")
        require(_importable("marionette_driver"), "the marionette-driver package is not installed")
        return
    require(WEBKIT_DRIVER.is_file(), f"{WEBKIT_DRIVER} is not installed (apt-get install webkit2gtk-driver)")
    require(minibrowser() is not None, f"no MiniBrowser matches {MINIBROWSER_GLOB} (apt-get install webkit2gtk-driver)")
    require(bool(os.environ.get("DISPLAY")) or XVFB.is_file(), "no DISPLAY and no Xvfb (apt-get install xvfb)")
    require(_importable("selenium.webdriver.webkitgtk"), "the selenium package is not installed")


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def launch(engine: str) -> Iterator[Browser]:
    """Start ``engine`` ("chromium", "firefox" or "webkitgtk") with a 1280x800 viewport; quit it on exit."""
    require_engine(engine)
    starters = {"chromium": _chromium, "firefox": _firefox, "webkitgtk": _webkitgtk}
    with starters[engine]() as browser:
        yield browser


@contextlib.contextmanager
def _chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield PlaywrightBrowser(browser)
        finally:
            browser.close()


@contextlib.contextmanager
def _firefox() -> Iterator[Browser]:
    from marionette_driver.marionette import Marionette

    ARTIFACTS.mkdir(exist_ok=True)
    # port=0: Marionette picks a free port, so parallel runs do not collide on 2828.
    driver = Marionette(bin=str(FIREFOX), headless=True, port=0, gecko_log=str(ARTIFACTS / "firefox-gecko.log"))
    try:
        driver.start_session()
        driver.set_window_rect(width=VIEWPORT[0], height=VIEWPORT[1])
        yield MarionetteBrowser(driver, driver.current_window_handle)
    finally:
        driver.cleanup()


@contextlib.contextmanager
def _webkitgtk() -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.webkitgtk.options import Options
    from selenium.webdriver.webkitgtk.service import Service

    options = Options()
    options.binary_location = str(minibrowser())
    options.add_argument("--automation")  # MiniBrowser accepts a WebDriver session only with it
    with x_display() as display:
        service = Service(executable_path=str(WEBKIT_DRIVER), env={**WEBKIT_ENV, **os.environ, "DISPLAY": display})
        driver = webdriver.WebKitGTK(options=options, service=service)
        # A WebDriver command that never answers fails the test instead of holding CI: a
        # screenshot once hung for minutes in a full parallel run (selenium's default: no limit).
        driver.command_executor._client_config.timeout = COMMAND_TIMEOUT
        try:
            driver.set_window_rect(width=VIEWPORT[0], height=VIEWPORT[1])
            yield SeleniumBrowser(driver, driver.current_window_handle)
        finally:
            driver.quit()


@contextlib.contextmanager
def x_display() -> Iterator[str]:
    """The current ``DISPLAY``, or a new Xvfb on a free display number for the duration."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        [str(XVFB), "-displayfd", str(write), "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read) as numbers:
            number = numbers.readline().strip()  # Xvfb writes the display number once it is ready
        if not number:
            raise RuntimeError(f"Xvfb did not start (exit status {xvfb.poll()})")
        yield f":{number}"
    finally:
        xvfb.terminate()
        try:
            xvfb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()


def sign_in(tab: Tab, base: str, username: str, password: str) -> None:
    """Sign in through the /login form as a person does (fill both fields, click Sign in)."""
    tab.goto(f"{base}/login")
    tab.fill("#username", username)
    tab.fill("#password", password)
    tab.click("form button[type=submit]")
    tab.wait("return !location.pathname.startsWith('/login') && document.readyState === 'complete'",
             what="the page after signing in")
