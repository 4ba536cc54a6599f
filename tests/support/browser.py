"""Debian's headless Chromium under Selenium, for the tests that use the Airflow UI as a person does.

Nothing downloads a browser: the executables are the Debian packages ``chromium`` and
``chromium-driver``. Without them a test is skipped on a laptop, with the command that installs
them, and fails in CI (``CI=true``), where `.ci/run` installs them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Browser", "require_chromium"]

INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".shardflow" / "screenshots"


def require_chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver; skip (fail in CI) when they are missing."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = f"headless Chromium is not installed: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Browser:
    """One headless Chromium; :meth:`shot` saves numbered screenshots under ``.shardflow/screenshots/``.

    :param name: the folder of this test's screenshots.
    """

    def __init__(self, name: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver = require_chromium()
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--window-size=1400,1000",
        ):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.driver.implicitly_wait(10)
        self.folder = SCREENSHOTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.shots = 0

    def shot(self, what: str) -> Path:
        self.shots += 1
        path = self.folder / f"{self.shots:02d}-{what}.png"
        self.driver.save_screenshot(str(path))
        return path

    def find(self, xpath: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.XPATH, xpath)

    def type_into(self, element: Any, text: str) -> None:
        """Type ``text`` key by key into a field the UI re-renders as it changes (typed all at
        once, keys get lost), and check the field holds it."""
        from selenium.webdriver.common.keys import Keys

        for _ in range(3):
            element.send_keys(Keys.CONTROL, "a")
            element.send_keys(Keys.BACKSPACE)
            for key in text:
                element.send_keys(key)
            if element.get_attribute("value") == text:
                return
        raise AssertionError(f"typed {text!r}, but the field holds {element.get_attribute('value')!r}")

    def field(self, name: str) -> Any:
        """A trigger-form field by its param's name."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.NAME, f"element_{name}")

    def log_in(self, url: str, user: str, password: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(url)
        username, secret = self.driver.find_elements(By.TAG_NAME, "input")[:2]
        self.type_into(username, user)
        self.type_into(secret, password)
        self.shot(f"login-{user}")
        self.find("//button[normalize-space()='Sign in']").click()
        self.wait_for(lambda: "/auth/login" not in self.driver.current_url, f"{user} to be logged in")

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.5)
        self.shot("timed-out")
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def quit(self) -> None:
        self.driver.quit()
