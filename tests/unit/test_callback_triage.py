"""Callbacks that cannot change a transfer are recorded by the webhook, not enqueued."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from celery import Celery
from flask.testing import FlaskClient

from shared.config import Settings
from shared.http import settle_environment
from shared.store import State, Store
from tests.helpers import drain_queue
from tests.unit.conftest import AppFactory
from tests.unit.test_webhooks import post, screened

LEG = "CA" + "a" * 32


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app().test_client()


def notes(store: Store, tid: str) -> list[str]:
    return [str(e["note"]) for e in store.timeline(tid)]


def test_ringing_of_the_recorded_leg_is_recorded_not_enqueued(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    tid = screened(store)
    store.set_fields(tid, agent_call_sid=LEG)
    resp = post(client, settings, f"/twilio/agent-status?transfer_id={tid}",
                {"CallSid": LEG, "CallStatus": "ringing"})
    assert resp.status_code == 204
    assert drain_queue(celery_app, "transfers") == []
    assert notes(store, tid)[-1] == "human agent ringing"
    assert store.get_transfer(tid)["agent_status"] == "ringing"  # type: ignore[index]


@pytest.mark.parametrize(("recorded_sid", "query"), [
    ("", ""),                 # the worker records the leg's sid
    (LEG, "&attempt=1"),      # another destination's leg: the worker checks the dial
    ("CA" + "b" * 32, ""),    # not the leg we know
])
def test_ringing_the_worker_must_see_is_enqueued(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery,
        recorded_sid: str, query: str) -> None:
    tid = screened(store)
    if recorded_sid:
        store.set_fields(tid, agent_call_sid=recorded_sid)
    before = notes(store, tid)
    post(client, settings, f"/twilio/agent-status?transfer_id={tid}{query}",
         {"CallSid": LEG, "CallStatus": "ringing"})
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["kind"] == "agent-status"
    assert notes(store, tid) == before


def test_answer_of_the_recorded_leg_is_recorded_not_enqueued(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    # What the worker's _agent_status did with it: agent_status, then human_answered from
    # requested or dialing, noted with the state; the lead's status follows.
    tid = screened(store)
    store.set_fields(tid, agent_call_sid=LEG)
    resp = post(client, settings, f"/twilio/agent-status?transfer_id={tid}",
                {"CallSid": LEG, "CallStatus": "in-progress"})
    assert resp.status_code == 204
    assert drain_queue(celery_app, "transfers") == []
    rec = store.get_transfer(tid)
    assert rec is not None and rec["state"] == "human_answered"
    assert rec["agent_status"] == "in-progress"
    last = store.timeline(tid)[-1]
    assert (last["note"], last.get("state")) == ("human agent answered", "human_answered")
    assert store.lead_status("L1")["status"] == "human_answered"  # type: ignore[index]


def test_answer_after_the_state_moved_on_sets_the_status_only(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    # The join was handled first (the worker's transition would find the state past it).
    tid = screened(store)
    store.set_fields(tid, agent_call_sid=LEG)
    store.transition(tid, State.BRIDGING, "human agent joined; moving the customer")
    before = notes(store, tid)
    post(client, settings, f"/twilio/agent-status?transfer_id={tid}",
         {"CallSid": LEG, "CallStatus": "in-progress"})
    assert drain_queue(celery_app, "transfers") == []
    rec = store.get_transfer(tid)
    assert rec is not None and rec["state"] == "bridging"
    assert rec["agent_status"] == "in-progress"
    assert notes(store, tid) == before


def test_answer_the_worker_must_see_and_end_of_the_leg_are_enqueued(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    tid = screened(store)
    # No sid recorded yet: the worker records it (and indexes the call).
    post(client, settings, f"/twilio/agent-status?transfer_id={tid}",
         {"CallSid": LEG, "CallStatus": "in-progress"})
    store.set_fields(tid, agent_call_sid=LEG)
    post(client, settings, f"/twilio/agent-status?transfer_id={tid}",
         {"CallSid": LEG, "CallStatus": "completed"})
    assert [m["kwargs"]["params"]["CallStatus"]
            for m in drain_queue(celery_app, "transfers")] == ["in-progress", "completed"]
    assert store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]


def test_conference_start_is_noted_joins_are_enqueued(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    tid = screened(store)
    path = f"/twilio/conference?transfer_id={tid}"
    post(client, settings, path, {"StatusCallbackEvent": "conference-start"})
    assert drain_queue(celery_app, "transfers") == []
    assert notes(store, tid)[-1] == "conference conference-start"
    post(client, settings, path, {"StatusCallbackEvent": "participant-join", "CallSid": LEG})
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["params"]["StatusCallbackEvent"] == "participant-join"


def test_callbacks_after_the_end_are_noted_late(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    tid = screened(store)
    store.transition(tid, State.SUCCEEDED, "customer joined the human agent")
    post(client, settings, f"/twilio/conference?transfer_id={tid}",
         {"StatusCallbackEvent": "participant-leave", "CallSid": LEG})
    post(client, settings, f"/twilio/agent-status?transfer_id={tid}",
         {"CallSid": LEG, "CallStatus": "completed"})
    assert drain_queue(celery_app, "transfers") == []
    assert notes(store, tid)[-2:] == ["late conference callback ignored",
                                      "late agent-status callback ignored"]


def test_unknown_transfer_goes_to_the_worker(client: FlaskClient, settings: Settings,
                                             celery_app: Celery) -> None:
    post(client, settings, "/twilio/conference?transfer_id=tr_unknown",
         {"StatusCallbackEvent": "conference-start"})
    assert len(drain_queue(celery_app, "transfers")) == 1


def test_settled_session_keeps_the_environment_proxy(monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = settle_environment(requests.Session(), "https://api.twilio.com")
    assert session.trust_env is False
    assert session.proxies.get("https") == "http://proxy.example:3128"


def test_publishes_reuse_one_redis_client_per_pool() -> None:
    from kombu.transport import redis as kombu_redis

    from shared.celery_config import reuse_redis_clients

    reuse_redis_clients()
    made: list[Any] = []

    class Chan:
        def __init__(self) -> None:
            self.pool: object = object()

        def _create_client(self) -> object:
            made.append(object())
            return made[-1]

    chan = Chan()
    acquire = kombu_redis.Channel.conn_or_acquire
    with acquire(chan) as a, acquire(chan) as b:  # type: ignore[arg-type]
        assert a is b and len(made) == 1
    chan.pool = object()  # the channel dropped its pool (lost connection)
    with acquire(chan) as c:  # type: ignore[arg-type]
        assert c is not a and len(made) == 2
    given = object()
    with acquire(chan, given) as d:  # type: ignore[arg-type]
        assert d is given


@pytest.mark.parametrize("accesslog", [None, "-"])
def test_access_line_only_with_accesslog(accesslog: str | None) -> None:
    from types import SimpleNamespace

    from gunicorn.glogging import Logger  # type: ignore[import-untyped]

    import webhooks.gunicorn_conf as conf

    calls: list[Any] = []
    logger = conf.QuietAccessLogger.__new__(conf.QuietAccessLogger)
    logger.cfg = SimpleNamespace(accesslog=accesslog)
    original = Logger.access
    try:
        Logger.access = lambda self, *a: calls.append(a)  # type: ignore[method-assign]
        logger.access(None, None, {}, None)
    finally:
        Logger.access = original  # type: ignore[method-assign]
    assert len(calls) == (1 if accesslog else 0)


def test_a_declared_queue_is_not_declared_again_per_publish() -> None:
    from types import SimpleNamespace

    from kombu import common

    from shared.celery_config import reuse_redis_clients

    reuse_redis_clients()

    class Queue:
        can_cache_declaration = True

    queue = Queue()
    client = SimpleNamespace(declared_entities={hash(queue)})
    channel = SimpleNamespace(connection=SimpleNamespace(client=client))
    assert common._imaybe_declare(queue, channel) is False
    client.declared_entities = set()  # a new connection: declared again (through kombu)
    with pytest.raises(Exception):  # noqa: B017,PT011 - kombu's own path, on a fake entity
        common._imaybe_declare(queue, channel)


@pytest.mark.parametrize("ended", [False, True])
def test_another_accounts_callback_records_nothing(store: Store, ended: bool) -> None:
    # A callback verified with account "acme"'s secret about a transfer of the default
    # account: the webhook writes nothing (no ringing, no late note); the worker refuses it.
    tid = screened(store)
    store.set_fields(tid, agent_call_sid=LEG)
    if ended:
        store.transition(tid, State.FAILED, "no answer")
    before, record = notes(store, tid), store.get_transfer(tid)
    outcome = store.triage_callback(tid, "agent-status", "human agent ringing",
                                    call_sid=LEG, fields={"agent_status": "ringing"},
                                    account="acme")
    assert outcome == "enqueue"
    assert notes(store, tid) == before and store.get_transfer(tid) == record
    # The transfer's own account: recorded (or noted late) as before.
    assert store.triage_callback(tid, "agent-status", "human agent ringing", call_sid=LEG,
                                 fields={"agent_status": "ringing"},
                                 account="default") == ("late" if ended else "recorded")
