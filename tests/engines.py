"""One small browser driver for three engines: Chromium (Playwright), Firefox ESR (Marionette) and
WebKitGTK (WebKitWebDriver + MiniBrowser, through Selenium's WebKitGTK driver).

The cross-engine tests (tests/test_engines.py) and the page-latency bench (bench/page_latency.py)
speak only this layer: ``launch(name)`` gives a ``Browser``, ``Browser.new_tab()`` a ``Tab`` with
``goto``, ``click``, ``fill``, ``evaluate``, ``wait``, ``wait_for_selector``, ``wait_for_text``,
``screenshot``. Scripts are JavaScript *function bodies* (``return ...``, arguments in
``arguments``), the WebDriver form (https://www.w3.org/TR/webdriver2/#execute-script), which each
implementation adapts. Every tab of a browser shares its cookies (one sign-in per browser).

System binaries (Debian): /usr/bin/chromium, /usr/bin/firefox-esr, /usr/bin/WebKitWebDriver and
the MiniBrowser of webkit2gtk-driver's libwebkit2gtk. MiniBrowser needs an X display: when there
is none (no ``DISPLAY``), ``launch("webkitgtk")`` starts Xvfb on a free display number
(``-displayfd``) for as long as the browser runs. Firefox runs headless (``MOZ_HEADLESS``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require, require_chromium

ENGINES = ("chromium", "firefox", "webkitgtk")
FIREFOX = Path("/usr/bin/firefox-esr")
WEBKIT_DRIVER = Path("/usr/bin/WebKitWebDriver")
MINIBROWSER_GLOB = "/usr/lib/*-linux-gnu/webkit2gtk-4.*/MiniBrowser"
XVFB = Path("/usr/bin/Xvfb")
VIEWPORT = (1280, 800)
POLL = 0.05  # seconds between two checks of a wait


class Tab(ABC):
    """One page of a ``Browser``. Every method runs in this tab, whichever tab was used last."""

    engine: str

    @abstractmethod
    def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""

    @abstractmethod
    def evaluate(self, body: str, *args: Any) -> Any:
        """Run a JS function body in the page (``arguments`` holds ``args``); return its JSON value."""

    @abstractmethod
    def click(self, selector: str) -> None:
        """Click the first element matching the CSS ``selector`` (scrolled into view) like a mouse."""

    @abstractmethod
    def fill(self, selector: str, text: str) -> None:
        """Replace the value of the input matching ``selector`` by typing ``text``."""

    @abstractmethod
    def _screenshot(self, path: Path) -> None: ...

    @abstractmethod
    def browser_errors(self) -> tuple[type[Exception], ...]:
        """What the driver raises when a script meets a document being replaced (a wait retries)."""

    @abstractmethod
    def close(self) -> None:
        """Close the tab."""

    @property
    def url(self) -> str:
        return self.evaluate("return location.href")

    def reload(self) -> None:
        self.goto(self.url)

    def screenshot(self, name: str) -> Path:
        """Save the viewport as ``test-artifacts/<engine>-<name>.png``; returns the path."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.engine}-{name}.png"
        self._screenshot(path)
        return path

    def wait(self, body: str, *args: Any, timeout: float = 15, what: str = "") -> Any:
        """Evaluate ``body`` every 50 ms until it returns a truthy value, and return that value.

        Raises AssertionError (naming ``what`` or the script) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(body, *args)
            except self.browser_errors() as error:  # a navigation replaced the document mid-script
                value = error
            if value and not isinstance(value, Exception):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.engine}: waited {timeout} s for {what or body!r} (last: {value!r})")
            time.sleep(POLL)

    def wait_for_selector(self, selector: str, visible: bool = True, timeout: float = 15) -> None:
        """Wait until an element matches ``selector`` and (``visible``) is rendered and not hidden."""
        self.wait(
            "const e = document.querySelector(arguments[0]);"
            " return !!e && (!arguments[1] || (!e.closest('[hidden]') && e.getClientRects().length > 0));",
            selector, visible, timeout=timeout, what=f"{selector} {'visible' if visible else 'present'}",
        )

    def wait_for_text(self, selector: str, text: str, timeout: float = 15) -> str:
        """Wait until the element matching ``selector`` contains ``text``; return its text."""
        return self.wait(
            "const e = document.querySelector(arguments[0]);"
            " return e && e.textContent.includes(arguments[1]) ? e.textContent : null;",
            selector, text, timeout=timeout, what=f"{text!r} in {selector}",
        )

    def text(self, selector: str) -> str | None:
        return self.evaluate("const e = document.querySelector(arguments[0]); return e && e.textContent;", selector)


class Browser(ABC):
    """A running browser of one engine; ``new_tab()`` opens a tab with the browser's cookies."""

    engine: str

    @abstractmethod
    def new_tab(self) -> Tab: ...


# -- Chromium: Playwright -------------------------------------------------------------------------


class PlaywrightTab(Tab):
    engine = "chromium"

    def __init__(self, page: Any) -> None:
        self.page = page

    def goto(self, url: str) -> None:
        self.page.goto(url)

    def evaluate(self, body: str, *args: Any) -> Any:
        # Compiled by the DevTools protocol, not by the page, so the page's CSP (no eval) allows it.
        return self.page.evaluate(f"(args) => (function () {{ {body}\n}}).apply(null, args)", list(args))

    def click(self, selector: str) -> None:
        self.page.click(selector)

    def fill(self, selector: str, text: str) -> None:
        self.page.fill(selector, text)

    def _screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))

    def browser_errors(self) -> tuple[type[Exception], ...]:
        from playwright.sync_api import Error

        return (Error,)

    def close(self) -> None:
        self.page.close()


class PlaywrightBrowser(Browser):
    engine = "chromium"

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]})

    def new_tab(self) -> PlaywrightTab:
        return PlaywrightTab(self.context.new_page())

    def add_init_script(self, script: str) -> None:
        """Run ``script`` in every new document before the page's own scripts (Chromium only)."""
        self.context.add_init_script(script)


# -- WebDriver-style engines: one session, tabs are window handles ------------------------------------


class HandleTab(Tab):
    """A tab of a one-session WebDriver browser: switches the session to its window handle first."""

    def __init__(self, browser: HandleBrowser, handle: str) -> None:
        self.browser = browser
        self.handle = handle
        self.engine = browser.engine

    def _activate(self) -> Any:
        return self.browser.activate(self.handle)

    def goto(self, url: str) -> None:
        self.browser.navigate(self._activate(), url)

    def evaluate(self, body: str, *args: Any) -> Any:
        return self.browser.execute(self._activate(), body, args)

    def click(self, selector: str) -> None:
        self.browser.element(self._activate(), selector).click()

    def fill(self, selector: str, text: str) -> None:
        element = self.browser.element(self._activate(), selector)
        element.clear()
        element.send_keys(text)

    def _screenshot(self, path: Path) -> None:
        path.write_bytes(self.browser.png(self._activate()))

    def browser_errors(self) -> tuple[type[Exception], ...]:
        return self.browser.errors()

    def close(self) -> None:
        self.browser.close_window(self._activate())
        self.browser.current = None
        self.browser.activate(self.browser.first)  # a session needs a current window to open the next


class HandleBrowser(Browser):
    """What a WebDriver-like session must provide; tabs are window handles of the one session."""

    def __init__(self, driver: Any, handle: str) -> None:
        self.driver = driver
        self.first = handle
        self.current: str | None = handle
        self.opened = False

    def activate(self, handle: str) -> Any:
        if self.current != handle:
            self.switch(handle)
            self.current = handle
        return self.driver

    def new_tab(self) -> HandleTab:
        if not self.opened:  # the session's first window is the first tab
            self.opened = True
            return HandleTab(self, self.first)
        handle = self.open_window()
        self.current = handle
        return HandleTab(self, handle)

    @abstractmethod
    def switch(self, handle: str) -> None: ...

    @abstractmethod
    def errors(self) -> tuple[type[Exception], ...]:
        """The driver's script errors (see ``Tab.browser_errors``)."""

    @abstractmethod
    def open_window(self) -> str:
        """Open a new window or tab, switch to it, return its handle."""

    @abstractmethod
    def navigate(self, driver: Any, url: str) -> None: ...

    @abstractmethod
    def execute(self, driver: Any, body: str, args: tuple[Any, ...]) -> Any: ...

    @abstractmethod
    def element(self, driver: Any, selector: str) -> Any: ...

    @abstractmethod
    def png(self, driver: Any) -> bytes: ...

    @abstractmethod
    def close_window(self, driver: Any) -> None: ...


class MarionetteBrowser(HandleBrowser):
    """Firefox through its own remote protocol, Marionette (``marionette_driver``): Debian ships no
    geckodriver, and Marionette needs none. Scripts run in the page's own scope (``sandbox=None``),
    so what they put on ``window`` is the page's."""

    engine = "firefox"

    def errors(self) -> tuple[type[Exception], ...]:
        from marionette_driver.errors import JavascriptException, NoSuchWindowException

        return (JavascriptException, NoSuchWindowException)

    def switch(self, handle: str) -> None:
        self.driver.switch_to_window(handle)

    def open_window(self) -> str:
        handle = self.driver.open(type="tab", focus=True)["handle"]
        self.driver.switch_to_window(handle)
        return handle

    def navigate(self, driver: Any, url: str) -> None:
        driver.navigate(url)

    def execute(self, driver: Any, body: str, args: tuple[Any, ...]) -> Any:
        return driver.execute_script(body, script_args=list(args), sandbox=None, new_sandbox=False)

    def element(self, driver: Any, selector: str) -> Any:
        from marionette_driver.by import By

        return driver.find_element(By.CSS_SELECTOR, selector)

    def png(self, driver: Any) -> bytes:
        return driver.screenshot(format="binary", full=False)

    def close_window(self, driver: Any) -> None:
        driver.close()


class SeleniumBrowser(HandleBrowser):
    """WebKitGTK through WebKitWebDriver (Selenium's ``webdriver.WebKitGTK``) driving MiniBrowser.
    New tabs are new windows: MiniBrowser never paints a background tab, so a screenshot of one
    would wait forever."""

    engine = "webkitgtk"

    def errors(self) -> tuple[type[Exception], ...]:
        from selenium.common.exceptions import JavascriptException, NoSuchWindowException

        return (JavascriptException, NoSuchWindowException)

    def switch(self, handle: str) -> None:
        self.driver.switch_to.window(handle)

    def open_window(self) -> str:
        self.driver.switch_to.new_window("window")
        self.driver.set_window_rect(width=VIEWPORT[0], height=VIEWPORT[1])
        return self.driver.current_window_handle

    def navigate(self, driver: Any, url: str) -> None:
        driver.get(url)

    def execute(self, driver: Any, body: str, args: tuple[Any, ...]) -> Any:
        return driver.execute_script(body, *args)

    def element(self, driver: Any, selector: str) -> Any:
        return driver.find_element("css selector", selector)

    def png(self, driver: Any) -> bytes:
        return driver.get_screenshot_as_png()

    def close_window(self, driver: Any) -> None:
        driver.close()


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
        service = Service(executable_path=str(WEBKIT_DRIVER), env={**os.environ, "DISPLAY": display})
        driver = webdriver.WebKitGTK(options=options, service=service)
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
