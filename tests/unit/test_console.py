"""The operations console: authentication, and what its pages show from the store."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner

from shared.contracts import parse_request
from shared.store import State, Store, Transfer
from tests.helpers import make_request
from tests.unit.conftest import AppFactory
from webhooks import console
from workers.runtime import Runtime

TOKEN = "console-test-token-0123456789"
AGENT = "+14155550101"
FALLBACK = "+14155550102"


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app(console_token=TOKEN)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _cookie(response: Any, name: str) -> str:
    """The Set-Cookie header of `name`."""
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    return str(header)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def login(client: FlaskClient, token: str = TOKEN, next_: str = "") -> Any:
    page = client.get("/console/login")
    return client.post("/console/login", data={"csrf": _csrf(page.text), "token": token,
                                                "next": next_})


def _begin(store: Store, lead: str, numbers: list[str], provider: str = "twilio",
           now: float | None = None, account: str | None = None) -> Transfer:
    raw = make_request(lead_id=lead, call_id=f"CA{lead}", provider=provider,
                       transfer_number=numbers[0])
    raw["template"]["configurations"]["transfer_numbers"] = numbers
    if account is not None:
        raw["provider_account"] = account
    req = parse_request(raw, store.get_number, account_known=lambda p, a: True)
    store.begin(req, now=now)
    rec = store.get_record(req.transfer_id)
    assert rec is not None
    return rec


def _dialing(store: Store, rec: Transfer) -> Transfer:
    store.transition(rec.transfer_id, State.DIALING, "dialing the human")
    out = store.get_record(rec.transfer_id)
    assert out is not None
    return out


# --- authentication -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/console/", "/console/login", "/console/api/live",
                                  "/console/recent", "/console/static/console/console.js"])
def test_console_is_off_without_a_token(make_app: AppFactory, path: str) -> None:
    client = make_app(console_token="").test_client()
    assert client.get(path).status_code == 404
    assert client.post("/console/login", data={"token": ""}).status_code == 404


def test_without_a_session_pages_lead_to_the_login_page(client: FlaskClient) -> None:
    resp = client.get("/console/recent?reason=busy")
    assert resp.status_code == 303
    assert resp.headers["Location"].startswith("/console/login?next=")
    page = client.get(resp.headers["Location"])
    assert page.status_code == 200 and 'id="login-form"' in page.text
    assert 'class="logout"' not in page.text  # no navigation before logging in
    assert 'value="/console/recent?reason=busy"' in page.text
    api = client.get("/console/api/live")
    assert api.status_code == 401 and api.json == {"error": "login required"}


def test_login_sets_a_strict_httponly_secure_expiring_cookie(client: FlaskClient,
                                                             app: Flask) -> None:
    resp = login(client)
    assert resp.status_code == 303 and resp.headers["Location"] == "/console/"
    cookie = _cookie(resp, console.SESSION_COOKIE)
    ttl = app.extensions["warm_transfer"].settings.console_session_ttl
    for part in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/console", f"Max-Age={ttl}"):
        assert part in cookie, cookie
    assert client.get("/console/").status_code == 200
    assert client.get("/console/api/live").status_code == 200


def test_cookie_is_not_secure_on_plain_http(make_app: AppFactory) -> None:
    client = make_app(console_token=TOKEN,
                      public_base_url="http://localhost:8000").test_client()
    cookie = _cookie(login(client), console.SESSION_COOKIE)
    assert "Secure" not in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_wrong_token_is_refused(client: FlaskClient) -> None:
    resp = login(client, token=TOKEN + "x")
    assert resp.status_code == 401
    assert "not the console token" in resp.text
    assert not [h for h in resp.headers.getlist("Set-Cookie")
                if h.startswith(console.SESSION_COOKIE + "=")]
    assert client.get("/console/").status_code == 303


def test_login_without_its_csrf_token_is_refused(client: FlaskClient) -> None:
    client.get("/console/login")
    resp = client.post("/console/login", data={"csrf": "forged", "token": TOKEN})
    assert resp.status_code == 400 and "expired" in resp.text
    # A form token without the matching cookie (another browser's form) is refused too.
    other = client.application.test_client()
    token = _csrf(other.get("/console/login").text)
    fresh = client.application.test_client()
    assert fresh.post("/console/login",
                      data={"csrf": token, "token": TOKEN}).status_code == 400
    assert fresh.get("/console/").status_code == 303


def test_token_compare_never_matches_an_unset_token(make_app: AppFactory) -> None:
    settings = make_app(console_token="").extensions["warm_transfer"].settings
    assert not console.token_matches(settings, "")
    assert console.token_matches(settings.model_copy(update={"console_token": "t"}), "t")


def test_an_expired_session_is_refused(client: FlaskClient, app: Flask,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = app.extensions["warm_transfer"].settings
    old = int(time.time()) - settings.console_session_ttl - 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: old)
    stale = console.make_session(settings)
    monkeypatch.undo()
    client.set_cookie(console.SESSION_COOKIE, stale, path="/console")
    resp = client.get("/console/")
    assert resp.status_code == 303 and "expired=1" in resp.headers["Location"]
    assert "Your session expired" in client.get(resp.headers["Location"]).text
    assert client.get("/console/api/live").json == {"error": "session expired"}


def test_a_forged_or_old_token_session_is_refused(make_app: AppFactory) -> None:
    client = make_app(console_token=TOKEN).test_client()
    login(client)
    assert client.get("/console/").status_code == 200
    # The operator changes the token: the old token's sessions end.
    moved = make_app(console_token=TOKEN + "-new").test_client()
    moved.set_cookie(console.SESSION_COOKIE,
                     client.get_cookie(console.SESSION_COOKIE, path="/console").value,
                     path="/console")
    assert moved.get("/console/").status_code == 303
    moved.set_cookie(console.SESSION_COOKIE, "eyJzaWQiOiJ4In0.forged.sig", path="/console")
    assert moved.get("/console/").status_code == 303


def test_logout_needs_the_csrf_token(client: FlaskClient) -> None:
    login(client)
    assert client.post("/console/logout", data={"csrf": "wrong"}).status_code == 400
    assert client.get("/console/").status_code == 200
    csrf = _csrf(client.get("/console/").text)
    resp = client.post("/console/logout", data={"csrf": csrf})
    assert resp.status_code == 303
    assert client.get("/console/").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/",
                                    "/console/\\evil", "/elsewhere"])
def test_login_never_redirects_outside_the_console(client: FlaskClient, target: str) -> None:
    assert login(client, next_=target).headers["Location"] == "/console/"


def test_login_returns_to_the_page_asked_for(client: FlaskClient) -> None:
    assert login(client, next_="/console/recent?reason=busy").headers["Location"] == \
        "/console/recent?reason=busy"


def test_pages_forbid_framing_inline_script_and_caching(client: FlaskClient) -> None:
    login(client)
    resp = client.get("/console/")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<script>" not in resp.text  # the only script is the static file


# --- what the pages show --------------------------------------------------------------

def test_live_lists_transfers_in_flight_with_the_destination_masked(
        client: FlaskClient, store: Store) -> None:
    rec = _dialing(store, _begin(store, "L-live", [AGENT, FALLBACK],
                                 now=time.time() - 12))
    login(client)
    data = client.get("/console/api/live").json
    assert data is not None
    [row] = data["transfers"]
    assert row["transfer_id"] == rec.transfer_id and row["provider"] == "twilio"
    assert row["state"] == "dialing" and row["position"] == 1 and row["of"] == 2
    assert row["destination"] == "+14*******01"
    assert 11 <= row["elapsed"] < 60
    page = client.get("/console/").text
    assert rec.transfer_id in page and AGENT not in page


def test_an_ended_transfer_leaves_the_live_list_and_is_indexed_once(
        client: FlaskClient, store: Store, rt: Runtime) -> None:
    rec = _dialing(store, _begin(store, "L-end", [AGENT]))
    assert rt.succeed(rec, "customer joined", from_states=())
    first = store.r.zscore(Store.ENDED, rec.transfer_id)
    assert first is not None
    # The outbox path marks it sent again: the end time stays the first one.
    store.index_ended(rec.transfer_id, now=first + 100)
    assert store.r.zscore(Store.ENDED, rec.transfer_id) == first
    login(client)
    data = client.get("/console/api/live").json
    assert data is not None
    assert data["transfers"] == []
    assert [r["transfer_id"] for r in data["ended"]] == [rec.transfer_id]
    assert data["ended"][0]["outcome"] == "succeeded"


def test_the_ended_index_is_trimmed_to_the_record_ttl(store: Store) -> None:
    now = 1_000_000.0
    store.index_ended("tr_old", now=now)
    store.index_ended("tr_new", now=now + store.settings.transfer_record_ttl + 1)
    assert store.ended_between(0, now * 2, 10) == [
        ("tr_new", now + store.settings.transfer_record_ttl + 1)]
    assert 0 < store.r.ttl(Store.ENDED) <= store.settings.transfer_record_ttl


def _ended_mix(store: Store, rt: Runtime) -> dict[str, str]:
    ids = {}
    ok = _dialing(store, _begin(store, "L-ok", [AGENT]))
    rt.succeed(ok, "customer joined", from_states=())
    ids["ok"] = ok.transfer_id
    busy = _dialing(store, _begin(store, "L-busy", [FALLBACK], provider="plivo"))
    rt.fail(busy, "busy", "human busy")
    ids["busy"] = busy.transfer_id
    second = _dialing(store, _begin(store, "L-second", [AGENT, FALLBACK]))
    store.advance_destination(second.transfer_id, 0, "no_answer")
    rt.succeed(second, "customer joined", from_states=())
    ids["second"] = second.transfer_id
    return ids


def test_recent_filters_by_reason_and_counts_per_provider_and_position(
        client: FlaskClient, store: Store, rt: Runtime) -> None:
    ids = _ended_mix(store, rt)
    login(client)
    page = client.get("/console/recent?window=1h").text
    for tid in ids.values():
        assert tid in page
    by_provider = page.split('id="by-provider"')[1].split("</table>")[0]
    assert re.search(r"<td>plivo</td><td class=\"num\">1</td><td class=\"num\">0</td>"
                     r"<td class=\"num\">1</td><td class=\"num\">0%</td>", by_provider)
    assert re.search(r"<td>twilio</td><td class=\"num\">2</td><td class=\"num\">2</td>"
                     r"<td class=\"num\">0</td><td class=\"num\">100%</td>", by_provider)
    # Position 1: answered once (L-ok), busy once, not answered once; position 2: answered.
    by_position = page.split('id="by-position"')[1].split("</table>")[0]
    assert re.search(r"<td class=\"num\">1</td><td class=\"num\">3</td>"
                     r"<td class=\"num\">1</td><td class=\"num\">33%</td>", by_position)
    assert re.search(r"<td class=\"num\">2</td><td class=\"num\">1</td>"
                     r"<td class=\"num\">1</td><td class=\"num\">100%</td>", by_position)
    busy_only = client.get("/console/recent?window=1h&reason=busy").text
    listed = busy_only.split('id="recent"')[1]
    assert ids["busy"] in listed and ids["ok"] not in listed and ids["second"] not in listed
    assert client.get("/console/recent?window=1h&provider=twilio&outcome=failed"
                      ).text.count('data-transfer="') == 0


def test_recent_draws_the_bridge_time_distribution(client: FlaskClient, store: Store,
                                                   rt: Runtime) -> None:
    for i, age in enumerate((3.0, 4.0, 40.0)):
        rec = _dialing(store, _begin(store, f"L-b{i}", [AGENT], now=time.time() - age))
        rt.succeed(rec, "customer joined", from_states=())
    login(client)
    svg = client.get("/console/recent").text.split('<svg id="bridge-chart"')[1]
    svg = svg.split("</svg>")[0]
    assert "<title>2-5s: 2</title>" in svg and "<title>30-45s: 1</title>" in svg
    assert "<title>0-2s: 0</title>" in svg


def test_bridge_chart_percentiles() -> None:
    chart = console.bridge_chart([1.0] * 98 + [50.0, 100.0])
    assert (chart["p50"], chart["p99"], chart["count"]) == ("1.0s", "100.0s", 100)
    assert console.bridge_chart([])["p50"] == "-"


def test_one_transfer_shows_its_timeline_destinations_and_event_masked(
        client: FlaskClient, store: Store, rt: Runtime) -> None:
    rec = _dialing(store, _begin(store, "L-one", [AGENT, FALLBACK]))
    store.note(rec.transfer_id, f"callback: {AGENT} busy")
    store.advance_destination(rec.transfer_id, 0, "busy")
    rt.fail(rec, "no_answer", "nobody answered")
    login(client)
    page = client.get(f"/console/transfers/{rec.transfer_id}").text
    assert AGENT not in page and FALLBACK not in page
    timeline = page.split('id="timeline"')[1].split("</table>")[0]
    for text in ("transfer requested", "dialing the human", "callback: +14*******01 busy",
                 "destination 1 busy", "nobody answered"):
        assert text in timeline
    tried = page.split('id="tried"')[1].split("</table>")[0]
    assert re.search(r"1</td><td>\+14\*+01</td><td>busy", tried)
    assert re.search(r"2</td><td>\+14\*+02</td><td>no_answer", tried)
    event = page.split('<pre id="event">')[1].split("</pre>")[0]
    assert "transfer.failed" in event and "no_answer" in event


def test_unknown_or_odd_transfer_ids_are_404(client: FlaskClient) -> None:
    login(client)
    assert client.get("/console/transfers/tr_missing").status_code == 404
    assert client.get("/console/transfers/a%20b").status_code == 404


def test_a_transfer_in_flight_shows_the_destination_ringing(client: FlaskClient,
                                                           store: Store) -> None:
    rec = _dialing(store, _begin(store, "L-ring", [AGENT, FALLBACK]))
    store.advance_destination(rec.transfer_id, 0, "no_answer")
    login(client)
    page = client.get(f"/console/transfers/{rec.transfer_id}").text
    tried = page.split('id="tried"')[1].split("</table>")[0]
    assert re.search(r"1</td><td>\+14\*+01</td><td>no_answer", tried)
    assert re.search(r"2</td><td>\+14\*+02</td><td>ringing", tried)
    assert "Not ended yet." in page


def test_console_requests_are_not_counted_as_webhook_requests(client: FlaskClient,
                                                              app: Flask) -> None:
    login(client)
    client.get("/console/api/live")
    client.get("/healthz")
    metrics = app.extensions["warm_transfer"].metrics
    metrics.flush()
    counted = [k for k in metrics.r.hkeys("wt:metrics")
               if k.startswith("warm_transfer_webhook_requests|")]
    assert any("route=/healthz" in k for k in counted)
    assert not [k for k in counted if "/console" in k]


def test_each_view_shows_the_account_and_recent_filters_and_counts_by_it(
        client: FlaskClient, store: Store, rt: Runtime) -> None:
    ids = _ended_mix(store, rt)
    acme = _dialing(store, _begin(store, "L-acme", [AGENT], account="acme"))
    rt.fail(acme, "no_answer", "nobody answered")
    plivo_acme = _dialing(store, _begin(store, "L-pacme", [AGENT], provider="plivo",
                                        account="acme"))
    rt.succeed(plivo_acme, "customer joined", from_states=())
    flying = _dialing(store, _begin(store, "L-fly", [AGENT], account="acme"))
    login(client)
    data = client.get("/console/api/live").json
    assert data is not None
    assert [(r["transfer_id"], r["account"]) for r in data["transfers"]] == [
        (flying.transfer_id, "acme")]
    ended = {r["transfer_id"]: r["account"] for r in data["ended"]}
    assert ended[acme.transfer_id] == "acme" and ended[ids["ok"]] == "default"
    live = client.get("/console/").text
    assert re.search(rf'data-transfer="{flying.transfer_id}">.*?<td>twilio</td>'
                     r"<td>acme</td>", live, re.S)
    detail = client.get(f"/console/transfers/{acme.transfer_id}").text
    assert '<dd id="account">acme</dd>' in detail
    assert '<dd id="account">default</dd>' in client.get(
        f"/console/transfers/{ids['ok']}").text

    page = client.get("/console/recent?window=1h").text
    by_account = page.split('id="by-account"')[1].split("</table>")[0]
    # Per provider's account: twilio's acme is not plivo's acme.
    for provider, account, total, ok, failed, rate in (
            ("twilio", "default", 2, 2, 0, "100%"), ("twilio", "acme", 1, 0, 1, "0%"),
            ("plivo", "default", 1, 0, 1, "0%"), ("plivo", "acme", 1, 1, 0, "100%")):
        assert re.search(rf"<td>{provider}</td><td>{account}</td><td class=\"num\">{total}"
                         rf"</td><td class=\"num\">{ok}</td><td class=\"num\">{failed}</td>"
                         rf"<td class=\"num\">{rate}</td>", by_account), (provider, account)
    assert '<option value="acme" >acme</option>' in page
    only = client.get("/console/recent?window=1h&account=acme").text
    listed = only.split('id="recent"')[1]
    assert sorted(re.findall(r'data-transfer="([^"]+)"', listed)) == sorted(
        [acme.transfer_id, plivo_acme.transfer_id])
    assert '<option value="acme" selected>acme</option>' in only
    twilio_acme = client.get("/console/recent?window=1h&account=acme&provider=twilio").text
    assert re.findall(r'data-transfer="([^"]+)"', twilio_acme.split('id="recent"')[1]) == [
        acme.transfer_id]
