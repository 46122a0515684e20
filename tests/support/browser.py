"""Headless Chromium for the browser tests: Debian's ``chromium`` and ``chromedriver``
(``make browser``) driven by Selenium, offline (Selenium Manager never downloads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """A started browser with its profile and driver log in ``work_dir``; quit on exit.
    Skips locally (fails in CI) when Chromium is not installed."""
    from tests.conftest import missing

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing("Debian's chromium and chromium-driver are not installed (make browser)")

    # Selenium Manager must not try to download a browser or a driver
    monkeypatch.setenv("SE_OFFLINE", "1")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={work_dir / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(work_dir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
