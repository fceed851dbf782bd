"""The console in a real headless Chromium against the real stack and the sandbox: log in,
watch a transfer go from in flight to succeeded without a reload, filter the recent list
by reason, open a transfer's timeline; no session or an expired one gets the login page.

The tests run in order and share one browser (the session cookie carries over)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import TimestampSigner

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import CONSOLE_TOKEN
from tests.stack import Services
from webhooks import console

OUTBOUND = "+14155550199"
# Polling waits: generous, the box is shared; a pass never waits the whole time.
WAIT = 30.0


def _wait(driver: Any, what: str, check: Any, timeout: float = WAIT) -> Any:
    def probe(d: Any) -> Any:
        try:
            return check(d)
        except StaleElementReferenceException:
            return False  # the table was redrawn under us; look again
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(probe, message=what)


def _shot(driver: Any, shots: Path, name: str) -> None:
    driver.save_screenshot(str(shots / f"{name}.png"))


def _transfer(stack: Services, fate: str) -> tuple[str, str]:
    _, _, number, result = stack.request_transfer(fate, outbound=OUTBOUND)
    assert result["status"] == "transfer_requested", result
    return str(result["transfer_id"]), number


def _row(driver: Any, table: str, transfer_id: str) -> Any:
    rows = driver.find_elements(By.CSS_SELECTOR,
                                f'#{table} tbody tr[data-transfer="{transfer_id}"]')
    return rows[0] if rows else None


def _on_login_page(driver: Any) -> bool:
    return bool(driver.find_elements(By.ID, "login-form"))


def test_without_a_session_every_page_is_the_login_page(
        driver: Any, browser_stack: Services, shots: Path) -> None:
    base = browser_stack.settings.public_base_url
    for path in ("/console/", "/console/recent?reason=busy", "/console/transfers/tr_x"):
        driver.get(base + path)
        assert _on_login_page(driver), path
        assert "/console/login" in driver.current_url
    _shot(driver, shots, "01-login")


def test_a_wrong_token_is_refused(driver: Any, browser_stack: Services) -> None:
    driver.get(browser_stack.settings.public_base_url + "/console/login")
    driver.find_element(By.ID, "token").send_keys("not-the-token")
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    _wait(driver, "the login error", lambda d: d.find_elements(By.ID, "login-error"))
    assert _on_login_page(driver)
    assert driver.get_cookie(console.SESSION_COOKIE) is None


def test_log_in_and_watch_a_transfer_end_without_reloading(
        driver: Any, browser_stack: Services, shots: Path) -> None:
    base = browser_stack.settings.public_base_url
    driver.get(base + "/console/")
    assert _on_login_page(driver)
    driver.find_element(By.ID, "token").send_keys(CONSOLE_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    _wait(driver, "the live page", lambda d: d.find_elements(By.ID, "live"))
    cookie = driver.get_cookie(console.SESSION_COOKIE)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie").find(console.SESSION_COOKIE) < 0

    # A marker on this page's window: gone if the page were reloaded.
    driver.execute_script("window.__consoleMarker = 'same page';")
    # The human answers after a few seconds of ringing: the poller sees it in flight first.
    tid, number = _transfer(browser_stack, "answer-after:6")
    row = _wait(driver, "the transfer in flight", lambda d: _row(d, "live", tid))
    text = row.text
    assert "twilio" in text and ("dialing" in text or "requested" in text)
    assert number not in driver.page_source and f"{number[:3]}*" in text
    _shot(driver, shots, "02-live-in-flight")

    ended = _wait(driver, "the transfer ended",
                  lambda d: (not _row(d, "live", tid)) and _row(d, "ended", tid))
    assert "succeeded" in ended.text
    assert browser_stack.terminal(tid)["type"] == "transfer.succeeded"
    assert driver.execute_script("return window.__consoleMarker") == "same page"
    _shot(driver, shots, "03-live-ended")


def test_filter_recent_by_reason_and_open_a_timeline(
        driver: Any, browser_stack: Services, shots: Path) -> None:
    base = browser_stack.settings.public_base_url
    busy, _ = _transfer(browser_stack, "busy")
    answered, _ = _transfer(browser_stack, "answer")
    browser_stack.terminal(busy)
    browser_stack.terminal(answered)
    # The index entry is written right after the event is sent: wait for the page to have it.
    def listed(d: Any) -> bool:
        d.get(base + "/console/recent")
        return bool(_row(d, "recent", busy) and _row(d, "recent", answered))
    _wait(driver, "both transfers in the recent list", listed)
    assert driver.find_element(By.ID, "bridge-chart").tag_name == "svg"
    _shot(driver, shots, "04-recent")

    Select(driver.find_element(By.ID, "f-reason")).select_by_value("busy")
    driver.find_element(By.ID, "f-apply").click()
    _wait(driver, "the filtered list", lambda d: "reason=busy" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "#recent tbody tr[data-transfer]")
    assert rows and _row(driver, "recent", busy) and not _row(driver, "recent", answered)
    assert all(r.find_element(By.CSS_SELECTOR, "td.reason").text == "busy" for r in rows)
    _shot(driver, shots, "05-recent-busy")

    _row(driver, "recent", busy).find_element(By.LINK_TEXT, busy).click()
    _wait(driver, "the transfer page", lambda d: d.find_elements(By.ID, "timeline"))
    assert driver.find_element(By.ID, "transfer-state").text == "failed"
    states = [td.text for td in driver.find_elements(By.CSS_SELECTOR,
                                                     "#timeline tbody td .state")]
    assert states[0] == "requested" and "dialing" in states and states[-1] == "failed"
    assert "busy" in driver.find_element(By.ID, "tried").text
    assert '"type": "transfer.failed"' in driver.find_element(By.ID, "event").text
    _shot(driver, shots, "06-transfer")


def test_an_expired_session_is_refused(driver: Any, browser_stack: Services, shots: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = browser_stack.settings
    # A session cookie signed by the service's own key, older than CONSOLE_SESSION_TTL.
    old = int(time.time()) - settings.console_session_ttl - 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: old)
    stale = console.make_session(settings)
    monkeypatch.undo()
    # On the live page, logged in: the session expires under the poller, which goes to
    # the login page by itself.
    driver.get(settings.public_base_url + "/console/")
    assert driver.find_elements(By.ID, "live"), "not logged in"
    driver.add_cookie({"name": console.SESSION_COOKIE, "value": stale, "path": "/console",
                       "httpOnly": True, "sameSite": "Strict"})
    _wait(driver, "the login page after the session expired", _on_login_page)
    assert driver.find_element(By.ID, "expired").is_displayed()
    # And asked for directly, a page with the expired session is the login page.
    driver.get(settings.public_base_url + "/console/recent")
    assert _on_login_page(driver)
    assert driver.find_element(By.ID, "expired").is_displayed()
    _shot(driver, shots, "07-expired")


def test_logging_out_ends_the_session(driver: Any, browser_stack: Services) -> None:
    base = browser_stack.settings.public_base_url
    driver.get(base + "/console/login")
    driver.find_element(By.ID, "token").send_keys(CONSOLE_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    _wait(driver, "the live page", lambda d: d.find_elements(By.ID, "live"))
    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    _wait(driver, "the login page", _on_login_page)
    driver.get(base + "/console/")
    assert _on_login_page(driver)
