"""Provider accounts: resolution order and caching, clients per account, signatures per
account (cross-account refusal, rotation overlap), secrets kept out of logs and events."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import responses
from twilio.request_validator import RequestValidator

from providers import accounts
from providers.base import ProviderNotConfigured
from providers.exotel import handoff as exotel
from providers.plivo import handoff as plivo
from providers.telnyx import handoff as telnyx
from providers.twilio import handoff as twilio
from providers.twilio.account import TwilioAccount
from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from tests.helpers import drain_queue, make_request, make_transfer
from tests.unit.conftest import AppFactory
from tests.unit.providers.twilio import TWILIO_SID

ACME_SID = "AC" + "c" * 32
ACME_TOKEN = "acme-twilio-token-7f3e"
FILE = {
    "twilio": {"acme": {"account_sid": ACME_SID, "auth_token": ACME_TOKEN,
                        "auth_token_previous": "acme-old-token-1a2b",
                        "api_base_url": "https://twilio-acme.test"}},
    "plivo": {"acme": {"auth_id": "MA" + "C" * 18, "auth_token": "acme-plivo-token"}},
    "exotel": {"acme": {"account_sid": "acme2", "api_key": "acme-exo-key",
                        "api_token": "acme-exo-token", "webhook_token": "acme-exo-hook",
                        "api_base_url": "https://exotel-acme.test"}},
    "telnyx": {"acme": {"api_key": "acme-telnyx-key", "connection_id": "acme-app"}},
}
SECRETS = ("acme-twilio-token-7f3e", "acme-old-token-1a2b", "acme-plivo-token",
           "acme-exo-key", "acme-exo-token", "acme-exo-hook", "acme-telnyx-key")


@pytest.fixture
def multi(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(FILE))
    return settings.model_copy(update={"credentials_file": str(path)})


def test_default_account_is_the_environments(settings: Settings) -> None:
    account = accounts.resolve(settings, "twilio")
    assert isinstance(account, TwilioAccount)
    assert (account.name, account.account_sid) == ("default", TWILIO_SID)
    assert account.secret("auth_token") == "twilio-test-token"
    assert accounts.find(settings, "twilio", "acme") is None  # env: the default only


def test_the_default_account_reads_the_contract_environment_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_ID", "MA" + "E" * 18)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "env-token")
    monkeypatch.setenv("PLIVO_RESUME_URL", "https://platform.example.com/resume")
    settings = Settings()
    account = accounts.resolve(settings, "plivo")
    assert account.secret("auth_token") == "env-token"
    from providers.plivo.account import PlivoSettings
    assert accounts.provider_settings(settings, "plivo", PlivoSettings).resume_url == \
        "https://platform.example.com/resume"


def test_resolution_order_resolver_then_file_then_environment(
        multi: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fake_secret_manager")
    calls: list[tuple[str, str]] = []

    def lookup(provider: str, account: str) -> dict[str, str] | None:
        calls.append((provider, account))
        return {"account_sid": "AC" + "d" * 32, "auth_token": "from-resolver"} \
            if account == "vault" else None

    module.lookup = lookup  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_secret_manager", module)
    cfg = multi.model_copy(update={"credentials_resolver": "fake_secret_manager:lookup"})
    assert accounts.resolve(cfg, "twilio", "vault").secret("auth_token") == "from-resolver"
    assert accounts.resolve(cfg, "twilio", "acme").account_sid == ACME_SID  # the file
    assert accounts.resolve(cfg, "twilio").account_sid == TWILIO_SID  # the environment
    assert accounts.find(cfg, "twilio", "nobody") is None
    assert ("twilio", "vault") in calls and ("twilio", "nobody") in calls


def test_resolved_credentials_are_cached_for_the_ttl(
        multi: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(accounts.time, "monotonic", lambda: clock[0])
    cfg = multi.model_copy(update={"credentials_ttl": 30})
    assert accounts.resolve(cfg, "twilio", "acme").secret("auth_token") == ACME_TOKEN
    rotated = json.loads(json.dumps(FILE))
    rotated["twilio"]["acme"]["auth_token"] = "rotated-token"
    Path(cfg.credentials_file).write_text(json.dumps(rotated))
    clock[0] += 10
    assert accounts.resolve(cfg, "twilio", "acme").secret("auth_token") == ACME_TOKEN
    clock[0] += 25  # past the TTL: the rotation takes effect without a restart
    assert accounts.resolve(cfg, "twilio", "acme").secret("auth_token") == "rotated-token"


def test_yaml_file(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text("exotel:\n  south:\n    account_sid: south1\n    api_key: k\n"
                    "    api_token: t\n")
    cfg = settings.model_copy(update={"credentials_file": str(path)})
    assert accounts.resolve(cfg, "exotel", "south").account_sid == "south1"


def test_a_bad_entry_names_the_field_never_the_value(settings: Settings,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"twilio": {"x": {"auth_token": "s3cr3t-value", "oops": 1}}}))
    cfg = settings.model_copy(update={"credentials_file": str(path)})
    with pytest.raises(accounts.CredentialsUnavailable, match="invalid field") as exc:
        accounts.resolve(cfg, "twilio", "x")
    assert "oops" in str(exc.value) and "s3cr3t-value" not in str(exc.value)
    # The operator's entry is broken, not the request: service_unavailable, not unknown.
    with pytest.raises(accounts.CredentialsUnavailable):
        accounts.known(cfg, "twilio", "x")


# The ways an operator breaks the file: (name, content, what the log line says).
BROKEN = [
    ("accounts.json", '{"twilio": {"acme": {"auth_token": "s3cr3t-value"', "invalid JSON"),
    ("accounts.yaml", "twilio:\n  acme: {auth_token: s3cr3t-value\n", "invalid YAML"),
    ("accounts.json", '["s3cr3t-value"]', "must hold an object"),
    ("accounts.json", '{"twilio": ["s3cr3t-value"]}', "must map accounts"),
    ("accounts.json", '{"twilio": {"acme": "s3cr3t-value"}}', "must map fields"),
    ("accounts.json", b'{"twilio": "\xff s3cr3t-value"}', "not UTF-8"),
    ("missing.json", None, "unreadable"),
]


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("name", "content", "problem"), BROKEN)
def test_a_broken_file_refuses_as_service_unavailable_and_logs_why(
        settings: Settings, store: Store, celery_app: Any, tmp_path: Path,
        redis_client: Any, caplog: pytest.LogCaptureFixture, name: str, content: str | bytes | None,
        problem: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    cfg = settings.model_copy(update={"credentials_file": str(path)})
    client = TransferClient(cfg, store=store, celery=celery_app)
    caplog.set_level(logging.INFO)
    for request in (make_request(provider_account="acme"), make_request()):
        caplog.clear()
        refused = client.connect_to_live_agent(request)
        assert refused["status"] == "error" and refused["error"] == "service_unavailable"
        assert str(tmp_path) not in refused["message"]  # the caller learns nothing of ours
        [line] = _errors(caplog)
        said = line.getMessage() + str(line.__dict__.get("problem"))
        assert "CREDENTIALS_FILE" in said and str(path) in said and problem in said
        assert "s3cr3t-value" not in caplog.text
    assert drain_queue(celery_app, "transfers") == []
    assert redis_client.keys("*transfer*") == []


def test_a_resolver_that_raises_refuses_as_service_unavailable(
        settings: Settings, store: Store, celery_app: Any,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("broken_secret_manager")

    def lookup(provider: str, account: str) -> dict[str, str] | None:
        raise RuntimeError("GET https://vault.test/v1/x?token=s3cr3t-value: 500")

    module.lookup = lookup  # type: ignore[attr-defined]
    module.odd = lambda provider, account: ["s3cr3t-value"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "broken_secret_manager", module)
    for resolver, problem in (("broken_secret_manager:lookup", "RuntimeError"),
                              ("broken_secret_manager:odd", "not a mapping"),
                              ("broken_secret_manager:absent", "AttributeError"),
                              ("no_such_module_here:lookup", "ModuleNotFoundError")):
        cfg = settings.model_copy(update={"credentials_resolver": resolver})
        client = TransferClient(cfg, store=store, celery=celery_app)
        caplog.clear()
        refused = client.connect_to_live_agent(make_request(provider_account="acme"))
        assert refused["error"] == "service_unavailable", resolver
        [line] = _errors(caplog)
        said = str(line.__dict__.get("problem"))
        assert "CREDENTIALS_RESOLVER" in said and resolver in said and problem in said
        assert "s3cr3t-value" not in caplog.text
    assert drain_queue(celery_app, "transfers") == []


def test_the_last_good_copy_is_kept_while_the_file_is_broken(
        multi: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    monkeypatch.setattr(accounts.time, "monotonic", lambda: clock[0])
    cfg = multi.model_copy(update={"credentials_ttl": 30})
    assert accounts.resolve(cfg, "twilio", "acme").secret("auth_token") == ACME_TOKEN
    assert accounts.find(cfg, "twilio", "nobody") is None
    Path(cfg.credentials_file).write_text("{not json")
    clock[0] += 31
    caplog.clear()
    # Past the TTL: the refresh fails, and what was resolved stays (known and unknown)...
    assert accounts.resolve(cfg, "twilio", "acme").secret("auth_token") == ACME_TOKEN
    assert accounts.find(cfg, "twilio", "nobody") is None
    # ...as does what the last good file held but was never asked for.
    assert accounts.resolve(cfg, "plivo", "acme").secret("auth_token") == "acme-plivo-token"
    [line] = _errors(caplog)  # one line per failed refresh, not per look-up
    assert "last good copy" in line.getMessage() and "invalid JSON" in str(line.__dict__)
    # A process that never read the file good has nothing to keep: refused.
    fresh = cfg.model_copy()
    with pytest.raises(accounts.CredentialsUnavailable):
        accounts.find(fresh, "twilio", "acme")
    # Mended: the next refresh reads it again.
    rotated = json.loads(json.dumps(FILE))
    rotated["twilio"]["acme"]["auth_token"] = "rotated-token"
    Path(cfg.credentials_file).write_text(json.dumps(rotated))
    clock[0] += 31
    assert accounts.resolve(cfg, "twilio", "acme").secret("auth_token") == "rotated-token"


def test_a_callback_for_an_account_whose_source_is_broken_is_answered_503(
        settings: Settings, make_app: AppFactory, celery_app: Any, tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text("{not json")
    app = make_app(credentials_file=str(path))
    params = {"CallSid": "CA" + "a" * 32, "CallStatus": "busy", "AccountSid": ACME_SID}
    # 503: the provider retries, and a mended file then checks the signature.
    assert _twilio_post(app, settings, "/twilio/agent-status?transfer_id=tr_1&account=acme",
                        params, ACME_TOKEN) == 503
    client = app.test_client()
    call = "c0ffee00c0ffee00c0ffee00c0ffee00"
    assert client.get(f"/exotel/dial-up?token=acme-exo-hook&account=acme&CallSid={call}"
                      ).status_code == 503
    assert drain_queue(celery_app, "transfers") == []


def test_secrets_are_masked_in_reprs(multi: Settings) -> None:
    for provider in FILE:
        text = repr(accounts.resolve(multi, provider, "acme")) + str(multi) + repr(multi)
        assert not [s for s in SECRETS if s in text]
    assert "twilio-test-token" not in repr(multi)


def test_each_providers_client_is_built_with_the_transfers_account(multi: Settings) -> None:
    acme = make_transfer(account="acme")
    default = make_transfer(transfer_id="tr_2")
    client = twilio.make_client(multi, acme)
    assert (client.username, client.password) == (ACME_SID, ACME_TOKEN)
    assert client.api.base_url == "https://twilio-acme.test"
    assert twilio.make_client(multi, default).username == TWILIO_SID
    assert plivo.make_client(multi, acme).sdk.session.auth == ("MA" + "C" * 18,
                                                               "acme-plivo-token")
    assert exotel.make_client(multi, acme).session.auth == ("acme-exo-key", "acme-exo-token")
    assert exotel.make_client(multi, acme).base == \
        "https://exotel-acme.test/v1/Accounts/acme2"
    assert telnyx.account_of(multi, acme).connection_id == "acme-app"
    with pytest.raises(ProviderNotConfigured):
        twilio.make_client(multi, make_transfer(transfer_id="tr_3", account="nobody"))


def test_an_unknown_account_is_refused_and_nothing_enqueued(
        multi: Settings, store: Store, celery_app: Any) -> None:
    client = TransferClient(multi, store=store, celery=celery_app)
    refused = client.connect_to_live_agent(make_request(provider_account="nobody"))
    assert refused["status"] == "error" and refused["error"] == "unknown_provider_account"
    assert drain_queue(celery_app, "transfers") == []
    accepted = client.connect_to_live_agent(make_request(provider_account="acme"))
    assert accepted["status"] == "transfer_requested"
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["request"]["provider_account"] == "acme"
    assert store.get_transfer(accepted["transfer_id"])["account"] == "acme"  # type: ignore[index]


def _twilio_post(app: Any, settings: Settings, path: str, params: dict[str, str],
                 token: str) -> int:
    sig = RequestValidator(token).compute_signature(settings.public_base_url + path, params)
    resp = app.test_client().post(path, data=params, headers={"X-Twilio-Signature": sig})
    return int(resp.status_code)


def test_twilio_signatures_per_account(multi: Settings, make_app: AppFactory,
                                       celery_app: Any) -> None:
    app = make_app(credentials_file=multi.credentials_file)
    path = "/twilio/agent-status?transfer_id=tr_1&account=acme"
    params = {"CallSid": "CA" + "a" * 32, "CallStatus": "busy", "AccountSid": ACME_SID}
    assert _twilio_post(app, multi, path, params, ACME_TOKEN) == 204
    # The rotation overlap: the previous token is accepted while configured.
    assert _twilio_post(app, multi, path, params, "acme-old-token-1a2b") == 204
    # Signed with the default account's token, for acme's URL: refused.
    assert _twilio_post(app, multi, path, params, "twilio-test-token") == 403
    # Signed with acme's token but the URL names the default account: refused.
    assert _twilio_post(app, multi, "/twilio/agent-status?transfer_id=tr_1",
                        params, ACME_TOKEN) == 403
    # Acme's valid signature over another account's AccountSid: refused.
    other = {**params, "AccountSid": TWILIO_SID}
    assert _twilio_post(app, multi, path, other, ACME_TOKEN) == 403
    # An account we do not know: refused.
    assert _twilio_post(app, multi, "/twilio/agent-status?transfer_id=tr_1&account=zz",
                        params, ACME_TOKEN) == 403
    tasks = drain_queue(celery_app, "transfers")
    assert len(tasks) == 2 and all(t["kwargs"]["account"] == "acme" for t in tasks)


def test_exotel_tokens_per_account(multi: Settings, make_app: AppFactory) -> None:
    client = make_app(credentials_file=multi.credentials_file).test_client()
    call = "c0ffee00c0ffee00c0ffee00c0ffee00"
    assert client.get(f"/exotel/dial-up?token=acme-exo-hook&account=acme&CallSid={call}"
                      ).status_code != 403
    assert client.get(f"/exotel/dial-up?token=exo-webhook-secret&account=acme&CallSid={call}"
                      ).status_code == 403
    assert client.get(f"/exotel/dial-up?token=acme-exo-hook&CallSid={call}").status_code == 403


def test_a_callback_of_another_account_is_ignored_by_the_worker(
        multi: Settings, rt: Any, store: Store, mocked: responses.RequestsMock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import tasks

    monkeypatch.setattr(rt, "settings", multi)
    client = TransferClient(multi, store=store, celery=rt.celery)
    tid = client.connect_to_live_agent(make_request(provider_account="acme"))["transfer_id"]
    drain_queue(rt.celery, "transfers")
    tasks.provider_callback.apply(kwargs={
        "provider": "twilio", "kind": "agent-status", "transfer_id": tid,
        "params": {"CallSid": "CA" + "a" * 32, "CallStatus": "busy"}})
    notes = [e.get("note", "") for e in store.timeline(tid)]
    assert any("another account" in n for n in notes)
    assert store.get_transfer(tid)["state"] == "requested"  # type: ignore[index]


def test_secrets_never_reach_logs_or_events(multi: Settings, make_app: AppFactory,
                                            caplog: pytest.LogCaptureFixture,
                                            celery_app: Any) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(credentials_file=multi.credentials_file)
    path = "/twilio/agent-status?transfer_id=tr_1&account=acme"
    params = {"CallSid": "CA" + "a" * 32, "CallStatus": "busy", "AccountSid": ACME_SID}
    _twilio_post(app, multi, path, params, "wrong-token")
    _twilio_post(app, multi, path, params, ACME_TOKEN)
    with pytest.raises(ProviderNotConfigured) as exc:
        twilio.make_client(multi, make_transfer(transfer_id="tr_9", account="nobody"))
    text = caplog.text + str(exc.value) + json.dumps(drain_queue(celery_app, "transfers"))
    text += json.dumps(drain_queue(celery_app, "agent_events"))
    assert not [s for s in SECRETS if s in text]


def _participants(base: str, sid: str, lead: str) -> str:
    return f"{base}/2010-04-01/Accounts/{sid}/Conferences/transfer-{lead}/Participants.json"


def test_the_worker_dials_as_the_account_and_its_urls_name_it(
        multi: Settings, rt: Any, mocked: responses.RequestsMock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import tasks

    monkeypatch.setattr(rt, "settings", multi)
    url = _participants("https://twilio-acme.test", ACME_SID, "L1")
    mocked.post(url, status=201, json={"call_sid": "CA" + "b" * 32, "status": "queued",
                                       "account_sid": ACME_SID, "conference_sid": "CF1",
                                       "label": "agent"})
    tasks.transfer_request.apply(kwargs={"request": make_request(
        lead_id="L1", transfer_id="tr_L1", provider_account="acme")}).get()
    [call] = mocked.calls
    assert call.request.url == url
    assert call.request.headers["Authorization"].startswith("Basic ")
    import base64
    user, _, password = base64.b64decode(
        call.request.headers["Authorization"][6:]).decode().partition(":")
    assert (user, password) == (ACME_SID, ACME_TOKEN)
    body = str(call.request.body)
    assert "account%3Dacme" in body  # the callback URLs name the account, never its secret
    assert ACME_TOKEN not in body


def test_the_cap_refuses_at_the_limit_and_every_end_releases(
        multi: Settings, rt: Any, store: Store, events: Any,
        mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import tasks

    cfg = multi.model_copy(update={"account_max_concurrent": 1})
    monkeypatch.setattr(rt, "settings", cfg)
    for lead in ("L1", "L2"):
        mocked.post(_participants("https://twilio-acme.test", ACME_SID, lead), status=201,
                    json={"call_sid": "CA" + "b" * 32, "status": "queued",
                          "account_sid": ACME_SID, "conference_sid": "CF1",
                          "label": "agent"})
    client = TransferClient(cfg, store=store, celery=rt.celery)
    first = client.connect_to_live_agent(make_request(lead_id="L1", provider_account="acme"))
    [msg] = drain_queue(rt.celery, "transfers")
    tasks.transfer_request.apply(kwargs=msg["kwargs"]).get()
    assert store.account_in_flight("twilio", "acme") == 1
    # The quick look at request time: refused, nothing enqueued.
    refused = client.connect_to_live_agent(make_request(lead_id="L2", provider_account="acme"))
    assert refused["error"] == "account_limit"
    assert drain_queue(rt.celery, "transfers") == []
    # Another account is not held back by acme's.
    assert client.connect_to_live_agent(make_request(lead_id="L3"))["status"] == \
        "transfer_requested"
    drain_queue(rt.celery, "transfers")
    # A request that slips past the look (a producer sending the task itself): the worker's
    # atomic hold refuses it before anything is dialed.
    dialed = len(mocked.calls)
    tasks.transfer_request.apply(kwargs={"request": make_request(
        lead_id="L2", transfer_id="tr_L2", provider_account="acme")}).get()
    assert len(mocked.calls) == dialed
    assert [e["reason"] for e in events() if e["transfer_id"] == "tr_L2"] == ["account_limit"]
    # The first one ends (a busy human): its slot is released.
    tasks.provider_callback.apply(kwargs={
        "provider": "twilio", "kind": "agent-status", "transfer_id": first["transfer_id"],
        "params": {"CallSid": "CA" + "b" * 32, "CallStatus": "busy"},
        "account": "acme"}).get()
    assert store.get_transfer(first["transfer_id"])["state"] == "failed"  # type: ignore[index]
    assert store.account_in_flight("twilio", "acme") == 0
    assert store.lead_report("L1")["account"] == "acme"  # type: ignore[index]


def test_the_design_environment_names_are_the_packages_default_accounts() -> None:
    """DESIGN's "Configuration and processes" names are a contract: each is a variable of
    some provider package's default account or settings."""
    names = accounts.setting_names()
    contract = {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL",
                "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_BASE_URL", "PLIVO_RESUME_URL",
                "EXOTEL_ACCOUNT_SID", "EXOTEL_API_KEY", "EXOTEL_API_TOKEN",
                "EXOTEL_API_BASE_URL", "EXOTEL_WEBHOOK_TOKEN", "TELNYX_API_KEY",
                "TELNYX_PUBLIC_KEY", "TELNYX_CONNECTION_ID", "TELNYX_API_BASE_URL",
                "TWILIO_WEBHOOK_SHARED_KEYS", "EXOTEL_WEBHOOK_TOKEN_PREVIOUS",
                "EXOTEL_DIAL_UP_FORMAT", "EXOTEL_ALLOWED_IPS", "EXOTEL_TRUSTED_PROXIES",
                "TWILIO_SIP_AUTH_USERNAME", "TWILIO_SIP_AUTH_PASSWORD",
                "TELNYX_SIP_AUTH_USERNAME", "TELNYX_SIP_AUTH_PASSWORD"}
    assert contract - names == set()


def test_sip_credentials_are_secrets_of_the_credential_source(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", TWILIO_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t")
    monkeypatch.setenv("TWILIO_SIP_AUTH_USERNAME", "sip-user")
    monkeypatch.setenv("TWILIO_SIP_AUTH_PASSWORD", "sip-pass-9c1d")
    account = accounts.resolve(Settings(), "twilio")
    assert account.secret("sip_auth_password") == "sip-pass-9c1d"
    assert "sip-pass-9c1d" not in repr(account)


def test_a_transfer_of_another_account_logs_and_emits_no_secret(
        multi: Settings, rt: Any, mocked: responses.RequestsMock, events: Any,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import tasks

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(rt, "settings", multi)
    # Acme's API refuses: the failure path logs the provider's error and emits an event.
    mocked.post(_participants("https://twilio-acme.test", ACME_SID, "L5"), status=401,
                json={"code": 20003, "message": "Authenticate", "status": 401})
    tasks.transfer_request.apply(kwargs={"request": make_request(
        lead_id="L5", transfer_id="tr_L5", provider_account="acme")}).get()
    emitted = events()
    assert [e["reason"] for e in emitted if e["transfer_id"] == "tr_L5"] == ["provider_error"]
    text = caplog.text + json.dumps(emitted)
    assert not [s for s in SECRETS if s in text]


def test_the_worker_fails_a_named_account_with_a_broken_source_as_service_unavailable(
        multi: Settings, rt: Any, store: Store, events: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import tasks

    client = TransferClient(multi, store=store, celery=rt.celery)
    tid = client.connect_to_live_agent(make_request(provider_account="acme"))["transfer_id"]
    [msg] = drain_queue(rt.celery, "transfers")
    # The worker's process has not read the file, which broke after the client's check.
    Path(multi.credentials_file).write_text("{not json")
    monkeypatch.setattr(rt, "settings", multi.model_copy())
    tasks.transfer_request.apply(kwargs=msg["kwargs"])
    [event] = events()
    assert (event["transfer_id"], event["reason"]) == (tid, "service_unavailable")
