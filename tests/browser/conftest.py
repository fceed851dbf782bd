"""Browser tests of the console: Debian's headless chromium, driven through its
chromium-driver by Selenium, against the real stack (tests/stack.py) and the sandbox.
Skipped, saying why, where chromium or its driver is not installed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import ROOT, Services

CONSOLE_TOKEN = "browser-test-console-token"
# Long enough that a human answering after a few seconds is still inside the ring timeout.
RING_TIMEOUT = 15
CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")
_SHOTS: list[Path] = []


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return (f"{path} not found: the console's browser tests need Debian's {package} "
                    "(apt-get install -y chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="session")
def browser_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    with Services.running(tmp_path_factory.mktemp("browser"), console_token=CONSOLE_TOKEN,
                          transfer_ring_timeout=RING_TIMEOUT,
                          transfer_deadline_margin=5,
                          transfer_allowed_destinations="US") as running:
        yield running


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where the screenshots go: CONSOLE_SCREENSHOTS, else build/console-screenshots (not
    pytest's temporary folders, which later runs delete). Printed at the end of the run."""
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or ROOT / "build" /
                  "console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    _SHOTS.append(folder)
    return folder


@pytest.fixture(scope="session")
def driver(browser_stack: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    # Both paths given: Selenium never looks for (or downloads) a browser or driver itself.
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for folder in _SHOTS:
        files = sorted(p.name for p in folder.glob("*.png"))
        terminalreporter.write_line(f"console screenshots ({len(files)}): {folder}")
