"""Every accepted transfer ends in exactly one terminal event, under the faults real
deployments see. Each test counts terminal events per transfer."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis

from tests.faults.conftest import DEADLINE_MARGIN, RING_TIMEOUT
from tests.helpers import make_request, unique_lead
from tests.stack import SECOND, Services

DEADLINE = RING_TIMEOUT + DEADLINE_MARGIN
NUMBERS = {"twilio": 14155550100, "plivo": 14155550100, "exotel": 919999900100}
OUTBOUND = {"twilio": "+14155550199", "plivo": "+14155550199", "exotel": "+919999900001"}
_seq = iter(range(10**6))


AGENT_FIRST = {"handoff": "agent_first"}  # Plivo's second handoff


def begin(s: Services, provider: str, fate: str, config: dict[str, Any] | None = None,
          **flow: Any) -> tuple[str, str, str, str]:
    """Place a customer call and request its transfer; (lead, call, number, transfer id)."""
    lead, call_id, number, result = s.request_transfer(
        fate, f"+{NUMBERS[provider] + 1000 + next(_seq) % 8000}", provider=provider,
        outbound=OUTBOUND[provider], flow=flow, configurations=config)
    assert result["status"] == "transfer_requested", result
    return lead, call_id, number, str(result["transfer_id"])


def dials(s: Services, lead: str) -> int:
    return len(s.sandbox.api_requests(f"/Conferences/transfer-{lead}/Participants.json"))


def settle(s: Services, transfer_ids: list[str], timeout: float) -> dict[str, int]:
    """Wait until each transfer has a terminal event (or time runs out); count them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.terminal_count(t) for t in transfer_ids):
            break
        time.sleep(0.1)
    time.sleep(1.0)  # room for a duplicate to show up
    return {t: s.terminal_count(t) for t in transfer_ids}


def wait_redelivered(s: Services) -> None:
    """Until no message is left unacknowledged: a killed worker's task has been restored
    by the unacked sweep and run (and acknowledged) by another worker."""
    broker = redis.Redis.from_url(s.settings.celery_broker_url or s.settings.redis_url)
    deadline = time.monotonic() + 3 * s.settings.broker_visibility_timeout + 5
    while broker.hlen("unacked") or broker.llen("transfers"):
        assert time.monotonic() < deadline, "the killed task was not delivered again"
        time.sleep(0.2)


def kill_workers_and_start_one(s: Services) -> None:
    """SIGKILL every running worker (mid-task), then start a fresh one."""
    for worker in list(s.workers):
        if worker.poll() is None:
            s.kill_worker(worker)
    s.start_worker()


def twilio_with_fault(s: Services, fate: str, status: int, *, count: int = 1,
                      delay: float = 0.0) -> tuple[str, str, str]:
    """A Twilio transfer whose dial request meets a fault: (lead, call id, transfer id).
    status 0: only slow; -1: connection reset; else that HTTP status."""
    lead = unique_lead()
    s.sandbox.add_fault(f"/Conferences/transfer-{lead}/Participants.json", status,
                        count=count, delay=delay)
    call_id = s.customer_call(lead)
    number = f"+{NUMBERS['twilio'] + 1000 + next(_seq) % 8000}"
    s.sandbox.set_fate(number, fate)
    result = s.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number,
        outbound_number=OUTBOUND["twilio"]))
    return lead, call_id, str(result["transfer_id"])


def test_worker_killed_mid_handoff_dials_once_and_ends_once(services: Services) -> None:
    s = services
    # The dial request hangs in the provider long enough to kill the worker inside it.
    lead, _, tid = twilio_with_fault(s, "answer-after:0.5", 0, delay=1.5)
    deadline = time.monotonic() + 10
    while dials(s, lead) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kill_workers_and_start_one(s)
    event = s.terminal(tid, timeout=DEADLINE + 15)
    wait_redelivered(s)
    assert s.terminal_count(tid) == 1
    assert dials(s, lead) == 1, "the human was dialed twice"
    print(f"\nworker killed mid-dial: outcome {event['type']} {event.get('reason') or ''}")


def test_redis_restart_mid_run(services: Services) -> None:
    s = services
    started = [begin(s, provider, "answer-after:1.5")
               for provider in ("twilio", "plivo") for _ in range(5)]
    time.sleep(0.3)
    s.redis_server.restart(down_for=0.5)
    counts = settle(s, [t for *_, t in started], timeout=DEADLINE + 20)
    outcomes = Counter(s.terminal(t)["type"] for t in counts if counts[t])
    print(f"\nredis restarted with 10 transfers in flight: {dict(outcomes)}; "
          f"terminal counts {Counter(counts.values())}")
    assert set(counts.values()) == {1}


def test_callbacks_twice_shuffled_and_late(services: Services) -> None:
    s = services
    s.sandbox.repeat_callbacks = 2
    s.sandbox.callback_jitter = 0.3
    started = [begin(s, provider, fate, config) for provider, config in
               (("twilio", None), ("plivo", None), ("plivo", AGENT_FIRST))
               for fate in ("answer", "busy", "no-answer:0.3", "answer-after:0.5")]
    counts = settle(s, [t for *_, t in started], timeout=DEADLINE + 10)
    assert set(counts.values()) == {1}
    # Late and stale callbacks after every outcome, correctly signed.
    base = s.settings.public_base_url
    for _lead, call_id, _, tid in started:
        rec = s.store.get_transfer(tid) or {}
        if rec.get("provider") == "twilio":
            agent = rec.get("agent_call_sid", "CA0")
            for params in ({"CallSid": agent, "CallStatus": "busy"},
                           {"CallSid": agent, "CallStatus": "in-progress"}):
                s.sandbox.send_twilio_callback(
                    f"{base}/twilio/agent-status?transfer_id={tid}", params)
            s.sandbox.send_twilio_callback(f"{base}/twilio/conference?transfer_id={tid}",
                                           {"StatusCallbackEvent": "participant-join",
                                            "CallSid": call_id})
        elif rec.get("handoff") == "agent_first":
            agent = rec.get("agent_call_sid", "0")
            for path, params in (
                    ("af-hangup", {"CallUUID": agent, "CallStatus": "busy"}),
                    ("af-machine", {"CallUUID": agent, "Machine": "true"}),
                    ("af-conference", {"ConferenceAction": "enter", "CallUUID": call_id}),
                    ("af-conference", {"ConferenceAction": "exit", "CallUUID": agent})):
                s.sandbox.plivo.send(f"{base}/plivo/{path}?transfer_id={tid}", params)
        else:
            s.sandbox.plivo.send(f"{base}/plivo/dial-action?transfer_id={tid}",
                                 {"DialStatus": "busy", "CallUUID": call_id})
            s.sandbox.plivo.send(f"{base}/plivo/dial-callback?transfer_id={tid}",
                                 {"Event": "DialAnswer", "CallUUID": call_id})
    time.sleep(1.5)
    assert {t: s.terminal_count(t) for *_, t in started} == counts


def test_callbacks_after_the_deadline_change_nothing(services: Services) -> None:
    s = services
    lead, call_id, _, tid = begin(s, "twilio", "ignore")  # no callback ever comes
    event = s.terminal(tid, timeout=DEADLINE + 5)
    assert (event["reason"], event["action"]) == ("timeout", "resume")
    # The human's leg finally answers and joins, long after the transfer was abandoned.
    rec = s.store.get_transfer(tid) or {}
    agent = rec.get("agent_call_sid", "")
    base = s.settings.public_base_url
    s.sandbox.send_twilio_callback(f"{base}/twilio/agent-status?transfer_id={tid}",
                                   {"CallSid": agent, "CallStatus": "in-progress"})
    s.sandbox.send_twilio_callback(f"{base}/twilio/conference?transfer_id={tid}",
                                   {"StatusCallbackEvent": "participant-join",
                                    "CallSid": agent})
    time.sleep(1.0)
    assert s.terminal_count(tid) == 1
    assert s.sandbox.api_requests(f"/Calls/{call_id}.json") == []  # customer never moved
    assert s.store.get_flag(lead) is None


def test_provider_500s(services: Services) -> None:
    s = services
    lead, _, tid = twilio_with_fault(s, "answer", 500, count=2)
    assert s.terminal(tid)["type"] == "transfer.succeeded"
    assert dials(s, lead) == 3

    lead2, call2, _, tid2 = begin(s, "plivo", "answer")
    del lead2
    s.sandbox.add_fault(f"/Call/{call2}/", 500, count=100)
    event = s.terminal(tid2)
    # Either the transfer got through before the fault was armed, or it failed cleanly.
    assert event["type"] in ("transfer.succeeded", "transfer.failed")
    assert s.terminal_count(tid2) == 1


def test_provider_500s_throughout_fail_cleanly(services: Services) -> None:
    s = services
    lead = unique_lead()
    call_id = s.customer_call(lead, provider="plivo")
    s.sandbox.add_fault(f"/Call/{call_id}/", 500, count=100)
    s.sandbox.set_fate("+14155550179", "answer")
    result = s.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number="+14155550179", provider="plivo",
        outbound_number=OUTBOUND["plivo"]))
    event = s.terminal(str(result["transfer_id"]))
    assert (event["reason"], event["action"]) == ("provider_error", "resume")
    assert s.sandbox.calls[call_id].status == "in-progress"  # the customer is still there


def test_slow_provider_past_client_timeout_is_not_dialed_twice(services: Services) -> None:
    s = services
    # Twilio answers after our 1 s timeout, having placed the call all the same.
    lead, _, tid = twilio_with_fault(s, "answer-after:1", 0, delay=1.6)
    event = s.terminal(tid, timeout=DEADLINE + 5)
    assert event["type"] == "transfer.succeeded"
    # The retry waited for the slow request to finish, then found its call (by its status
    # callback, or by listing calls) instead of dialing again.
    assert dials(s, lead) == 1


def test_connection_reset_then_dial(services: Services) -> None:
    s = services
    lead, _, tid = twilio_with_fault(s, "answer", -1)
    assert s.terminal(tid)["type"] == "transfer.succeeded"
    assert dials(s, lead) == 2  # the reset one (never placed) and the real one


def test_200_concurrent_transfers_with_faults(services: Services) -> None:
    s = services
    rng = random.Random(20261125)
    fates = ["answer", "answer-after:1", "busy", "no-answer:0.5", "fail"]
    # Spread over each provider's two sandbox accounts (the default and SECOND).
    plan = [(("twilio", "plivo", "exotel")[i % 3], rng.choice(fates), rng.random(),
             SECOND if (i // 3) % 2 else None) for i in range(200)]
    s.sandbox.repeat_callbacks = 2  # every callback delivered twice
    s.sandbox.callback_jitter = 0.1
    started: list[tuple[str, str, str, str]] = []
    accounts: dict[str, str] = {}
    lock = threading.Lock()

    def run(chunk: list[tuple[str, str, float, str | None]]) -> None:
        for provider, fate, dice, account in chunk:
            lead = unique_lead()
            if dice < 0.1 and provider == "twilio":  # a transient API fault
                s.sandbox.add_fault(f"/Conferences/transfer-{lead}/", 503, count=1)
            call_id = s.customer_call(lead, provider=provider, account=account)
            number = f"+{NUMBERS[provider] + 1000 + next(_seq) % 8000}"
            s.sandbox.set_fate(number, fate)
            result = s.client.connect_to_live_agent(make_request(
                lead_id=lead, call_id=call_id, transfer_number=number, provider=provider,
                outbound_number=OUTBOUND[provider], outbound_number_id=None,
                **({"provider_account": account} if account else {})))
            with lock:
                started.append((provider, fate, lead, str(result.get("transfer_id"))))
                accounts[str(result.get("transfer_id"))] = account or "default"

    extra = s.start_worker(concurrency=4)  # I/O-bound tasks: more processes than cores
    threads = [threading.Thread(target=run, args=(plan[i::8],)) for i in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(1.0)
    # Mid-run, a worker dies without warning and another takes its place.
    s.kill_worker(next(w for w in s.workers if w.poll() is None))
    s.start_worker()
    for t in threads:
        t.join()
    ids = [tid for *_, tid in started]
    counts = settle(s, ids, timeout=DEADLINE + 60)
    elapsed = time.monotonic() - t0
    duplicates = sum(1 for c in counts.values() if c > 1)
    lost = sum(1 for c in counts.values() if c == 0)
    def outcome(tid: str) -> str:
        found = s.events.matching(lambda e: e["transfer_id"] == tid and e["type"] in (
            "transfer.succeeded", "transfer.failed"))
        return (found[0].get("reason") or "succeeded") if found else "none"

    outcomes = Counter((f"{p}:{accounts[t]}", outcome(t)) for p, _, _, t in started)
    print(f"\n200 concurrent transfers in {elapsed:.1f}s: requests={len(started)} "
          f"terminal={sum(counts.values())} duplicates={duplicates} lost={lost}")
    print("outcomes: " + ", ".join(f"{p}/{o}={n}" for (p, o), n in sorted(outcomes.items())))
    s.stop_worker(extra)
    assert len(started) == 200
    assert duplicates == 0
    assert lost == 0
    # Both accounts of each provider carried transfers through to their human (a callback
    # checked with the wrong account's secret would have left them to time out).
    for provider in ("twilio", "plivo", "exotel"):
        for account in ("default", SECOND):
            assert outcomes[(f"{provider}:{account}", "succeeded")] > 0, outcomes


@pytest.fixture(autouse=True)
def _workers_alive(services: Services) -> Any:
    yield
    if not any(w.poll() is None for w in services.workers):
        services.start_worker()


def test_fallback_chains_with_callbacks_twice_and_shuffled(services: Services) -> None:
    """Attempt-tagged legs under duplicate, reordered callbacks: each destination is dialed
    at most once, each transfer ends once, and the event names the right destination."""
    s = services
    s.sandbox.repeat_callbacks = 2
    s.sandbox.callback_jitter = 0.2
    chains: list[tuple[str, list[str], dict[str, Any], int | None]] = [
        ("twilio", ["busy", "answer"], {}, 1),
        ("twilio", ["no-answer:0.2", "busy", "answer"], {}, 2),
        ("twilio", ["machine", "answer"], {"voicemail_detection": True}, 1),
        ("twilio", ["decline", "answer"], {"screening": True}, 1),
        ("twilio", ["busy", "fail"], {}, None),
        ("plivo", ["busy", "answer"], {}, 1),
        # (Plivo screening: a decline lasts confirmTimeout, and success comes once the
        # human's leg has outlived it.)
        ("plivo", ["decline", "no-answer:0.2", "answer"],
         {"screening": True, "screening_timeout": 3}, 2),
        ("plivo", ["busy", "no-answer:0.2", "answer"], AGENT_FIRST, 2),
        ("plivo", ["machine", "answer"], {**AGENT_FIRST, "voicemail_detection": True}, 1),
        ("plivo", ["decline", "answer"],
         {**AGENT_FIRST, "screening": True, "screening_timeout": 3}, 1),
        ("plivo", ["busy", "fail"], AGENT_FIRST, None),
    ]
    started = []
    for provider, fates, config, expected in chains:
        lead = unique_lead()
        call_id = s.customer_call(lead, provider=provider)
        numbers = [f"+{NUMBERS[provider] + 1000 + next(_seq) % 8000}" for _ in fates]
        for number, fate in zip(numbers, fates, strict=True):
            s.sandbox.set_fate(number, fate)
        request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                               provider=provider, outbound_number=OUTBOUND[provider],
                               outbound_number_id=None, summary="Billing")
        request["template"]["configurations"] = {"transfer_numbers": numbers, **config}
        result = s.client.connect_to_live_agent(request)
        assert result["status"] == "transfer_requested", result
        started.append((str(result["transfer_id"]), numbers, expected))
    counts = settle(s, [t for t, *_ in started], timeout=3 * DEADLINE + 40)
    assert set(counts.values()) == {1}
    for tid, numbers, expected in started:
        [event] = s.events.matching(lambda e, t=tid: e["transfer_id"] == t
                                    and e["type"] in ("transfer.succeeded", "transfer.failed"))
        assert event["destination_index"] == expected, (
            event.get("reason"), [f"{e['at'][17:]} {e.get('state', '')} {e['note']}"
                                  for e in s.store.timeline(tid)])
        with s.sandbox.lock:
            legs = Counter(c.to for c in s.sandbox.calls.values() if c.to in numbers)
        assert max(legs.values()) == 1, legs  # no destination rang twice
        if expected is not None:
            assert list(legs) == numbers[:expected + 1]


def test_worker_killed_while_dialing_the_next_destination(services: Services) -> None:
    """The task that moved on to destination 2 dies inside its dial: the redelivered task
    finds that leg instead of dialing the second human twice."""
    s = services
    lead = unique_lead()
    call_id = s.customer_call(lead)
    first, second = (f"+{NUMBERS['twilio'] + 1000 + next(_seq) % 8000}" for _ in range(2))
    s.sandbox.set_fate(first, "busy-after:1")
    s.sandbox.set_fate(second, "answer-after:0.5")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND["twilio"], outbound_number_id=None)
    request["template"]["configurations"] = {"transfer_numbers": [first, second]}
    tid = str(s.client.connect_to_live_agent(request)["transfer_id"])
    deadline = time.monotonic() + 10
    while dials(s, lead) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # The second dial will hang in the provider long enough to kill the worker inside it.
    s.sandbox.add_fault(f"/Conferences/transfer-{lead}/Participants.json", 0, delay=1.5)
    while dials(s, lead) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kill_workers_and_start_one(s)
    event = s.terminal(tid, timeout=DEADLINE + 15)
    wait_redelivered(s)  # the killed task comes back and finds nothing left to do
    assert any("destination 1 ignored" in e["note"] or "late agent-status" in e["note"]
               for e in s.store.timeline(tid))
    assert s.terminal_count(tid) == 1
    assert dials(s, lead) == 2, "a destination was dialed twice"
    assert (event["type"], event["destination_index"]) == ("transfer.succeeded", 1)
    notes = [e["note"] for e in s.store.timeline(tid)]
    print(f"\nworker killed dialing destination 2: {notes}")


def test_ring_groups_with_callbacks_twice_and_shuffled(services: Services) -> None:
    """Ring groups (Twilio's gated calls, Plivo's one Dial of several Numbers) mixed with
    single numbers, every callback delivered twice and reordered: one terminal event each,
    the right destination and member named, no member bridged twice, never two humans
    with the customer."""
    s = services
    s.sandbox.repeat_callbacks = 2
    s.sandbox.callback_jitter = 0.2
    # (provider, the group's fates, the single number after it, destination, member)
    cases: list[tuple[str, list[str], str, int | None, int | None]] = []
    for provider in ("twilio", "plivo"):
        cases += [
            (provider, ["answer-after:0.8", "answer-after:0.2"], "answer", 0, 1),
            (provider, ["busy", "answer-after:0.3", "answer-after:0.6"], "answer", 0, 1),
            (provider, ["busy", "busy"], "answer", 1, None),
            (provider, ["no-answer:0.3", "busy"], "busy", None, None),
        ]
    started = []
    for provider, group_fates, single_fate, expected, member in cases:
        lead = unique_lead()
        call_id = s.customer_call(lead, provider=provider)
        numbers = [f"+{NUMBERS[provider] + 1000 + next(_seq) % 8000}"
                   for _ in (*group_fates, single_fate)]
        for number, fate in zip(numbers, (*group_fates, single_fate), strict=True):
            s.sandbox.set_fate(number, fate)
        request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                               provider=provider, outbound_number=OUTBOUND[provider],
                               outbound_number_id=None, summary="Billing")
        request["template"]["configurations"] = {"transfer_numbers": [
            {"group": numbers[:-1]}, numbers[-1]]}
        result = s.client.connect_to_live_agent(request)
        assert result["status"] == "transfer_requested", result
        started.append((provider, lead, str(result["transfer_id"]), numbers, expected,
                        member))
    counts = settle(s, [t for _, _, t, *_ in started], timeout=3 * DEADLINE + 40)
    assert set(counts.values()) == {1}
    for provider, _lead, tid, numbers, expected, member in started:
        [event] = s.events.matching(lambda e, t=tid: e["transfer_id"] == t
                                    and e["type"] in ("transfer.succeeded", "transfer.failed"))
        assert (event["destination_index"], event["destination_member"]) == (
            expected, member), (provider, [e["note"] for e in s.store.timeline(tid)])
        with s.sandbox.lock:
            legs = [c for c in s.sandbox.calls.values() if c.to in numbers]
            joined = {d.params.get("CallSid") for d in s.sandbox.deliveries
                      if d.params.get("StatusCallbackEvent") == "participant-join"}
        assert max(Counter(c.to for c in legs).values()) == 1  # nobody rang twice
        if provider == "plivo":
            # One human at most reached the customer: every other leg ended unanswered.
            assert sum(c.status == "in-progress" for c in legs) == (expected is not None)
        else:
            # Only one human ever entered the conference the customer is moved into.
            assert len(joined & {c.sid for c in legs}) == (expected is not None)
