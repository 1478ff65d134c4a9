"""The driver layer's classes: ``Tab`` and ``Browser`` and their implementations for Playwright
(Chromium), Marionette (Firefox) and WebDriver through Selenium (WebKitGTK). Start a browser with
``tests.engines.launch``; tests use only ``Tab`` and ``Browser``.

Scripts are JavaScript *function bodies* (``return ...``, arguments in ``arguments``), the
WebDriver form (https://www.w3.org/TR/webdriver2/#execute-script), which each implementation
adapts. Every tab of a browser shares its cookies.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from tests.browser_support import ARTIFACTS

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
