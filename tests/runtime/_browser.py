"""Headless Debian Chromium for the live page's end-to-end tests (selenium + chromedriver)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "run `make setup` as root, or apt-get install -y chromium chromium-driver espeak-ng"

# Chromium as root in a closed network: no sandbox, no GPU, no background connections
# (refused here, many at a time), a fresh profile per test module.
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def need_browser() -> None:
    """Fail (not skip) with the install command when Chromium or its driver is missing."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).is_file():
            pytest.fail(f"{exe} is missing: {INSTALL}")


@contextmanager
def headless_chromium(profile: Path, *flags: str, window: str = "1400,1000") -> Iterator[Any]:
    """A selenium driver for headless Chromium with ``BASE_FLAGS`` + ``flags`` and the
    profile in ``profile`` (removed afterwards)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    need_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BASE_FLAGS, *flags, f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, predicate: Callable[[Any], Any], timeout_s: float, what: str) -> Any:
    """``predicate(driver)``'s first truthy value within ``timeout_s``; else an
    AssertionError saying what the page did not show, with the browser console."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(predicate)
    except Exception as exc:  # TimeoutException: say what did not happen
        logs = ""
        try:
            logs = "; console: " + " | ".join(e["message"] for e in driver.get_log("browser"))
        except Exception:  # noqa: BLE001 - logs are a courtesy
            pass
        raise AssertionError(f"the page did not show {what} within {timeout_s} s{logs}") from exc
