"""
A real headless Chromium for the tests of the agent's web pages: Debian's
C{chromium} driven through Selenium and Debian's C{chromedriver}, started
fresh for each test with its own profile in the test's directory, and
stopped in the test's clean-up.

Selenium's calls block, so each one runs in a thread of the reactor's pool
(L{Browser.call}), and the reactor keeps serving the agent and the upstream
meanwhile. Every wait is an explicit wait for a condition in the page, with
a deadline.
"""

import os
import shutil
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e import WAIT, Steps, bounded, make_directory

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_INSTALL = "apt-get install -y chromium chromium-driver"

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
]
"""Headless, and kept from reaching out to the internet on its own (without
the background-networking flags it tries, and its failures are noisy)."""

WINDOW = (1400, 900)
"""The window's size, in CSS pixels."""

SCREENSHOTS = "screenshots"
"""The directory, in trial's working directory (C{_trial_temp}), that keeps
a screenshot of each page a test looked at."""

_T = TypeVar("_T")


def require_browser() -> None:
    """
    @raise SkipTest: when Chromium, its driver or Selenium is missing, with
        how to install them.
    """
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(program):
            raise SkipTest(f"needs {program}: {BROWSER_INSTALL}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise SkipTest("needs Selenium: pip install '.[test]'")


class Browser:
    """
    One Chromium window, driven through chromedriver.

    @ivar driver: the Selenium driver; use it only inside L{call}.
    """

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def call(self, action: Callable[..., _T], *arguments: Any) -> Deferred:
        """
        Run a blocking function of the driver in a thread.

        @param action: called with the driver and C{arguments}.
        @return: a Deferred firing with its result, failing after L{WAIT}
            seconds at most beyond the waits it makes itself.
        """
        name = getattr(action, "__name__", "a browser call")
        running = deferToThread(action, self.driver, *arguments)
        return bounded(running, 2 * WAIT, name)

    def wait(self, condition: Callable[[Any], _T], what: str) -> Deferred:
        """
        Wait in a thread until C{condition(driver)} is true, for at most
        L{WAIT} seconds.

        @param what: what is awaited, for the failure message.
        @return: a Deferred firing with the condition's value.
        """

        def waiting(driver: Any) -> Any:
            from selenium.common.exceptions import TimeoutException
            from selenium.webdriver.support.ui import WebDriverWait

            try:
                return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition)
            except TimeoutException:
                raise AssertionError(f"waited {WAIT:g}s in the browser for {what}")

        waiting.__name__ = what
        return self.call(waiting)

    def screenshot(self, name: str, whole_page: bool = False) -> Deferred:
        """
        Save a screenshot of the page as C{_trial_temp/screenshots/NAME.png}.

        @param whole_page: make the window as tall as the page first, to
            show what is below the fold of a page that scrolls as a whole.
        @return: a Deferred firing with the file's path.
        """
        os.makedirs(SCREENSHOTS, exist_ok=True)
        path = os.path.abspath(os.path.join(SCREENSHOTS, f"{name}.png"))

        def save(driver: Any) -> str:
            if whole_page:
                height = driver.execute_script(
                    "return document.documentElement.scrollHeight;"
                )
                driver.set_window_size(WINDOW[0], max(WINDOW[1], height + 120))
            driver.save_screenshot(path)
            return path

        return self.call(save)

    def console_errors(self) -> Deferred:
        """
        @return: a Deferred firing with the messages the page logged as
            errors (script errors, refused requests) since the last call.
        """

        def read(driver: Any) -> list[str]:
            return [
                entry["message"]
                for entry in driver.get_log("browser")
                if entry.get("level") == "SEVERE"
            ]

        return self.call(read)


def _launch(driver: None, profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(WAIT)
    browser.set_script_timeout(WAIT)
    return browser


@inlineCallbacks
def start_browser(test: TestCase) -> Steps[Browser]:
    """
    Start Chromium with a new profile in the test's directory, quit in the
    test's clean-up.

    @raise SkipTest: see L{require_browser}.
    @return: a Deferred firing with the L{Browser}.
    """
    require_browser()
    profile = os.path.join(make_directory(test), "chromium-profile")
    launching = deferToThread(_launch, None, profile)
    driver = yield bounded(launching, 2 * WAIT, "Chromium to start")
    browser = Browser(driver)

    def quit() -> Deferred:
        return bounded(deferToThread(driver.quit), 2 * WAIT, "Chromium to quit")

    test.addCleanup(shutil.rmtree, profile, True)
    test.addCleanup(quit)
    return browser
