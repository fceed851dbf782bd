import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

import shared.store as store_module
from shared.config import Settings, parse_sentinel_url
from shared.contracts import parse_request
from shared.store import State, Store, flag_key, hash_part
from tests.helpers import make_request


def _req(store: Store, **kw: object):  # type: ignore[no-untyped-def]
    return parse_request(make_request(**kw), store.get_number)  # type: ignore[arg-type]


def test_begin_creates_record_claim_index_and_deadline(store: Store, settings: Settings) -> None:
    req = _req(store, lead_id="L1", call_id="CA1")
    assert store.begin(req, now=1000.0) == ("created", "requested")
    rec = store.get_transfer(req.transfer_id)
    assert rec is not None
    assert rec["state"] == "requested" and rec["transfer_number"] == "+14155550101"
    assert store.active_transfer("L1") == req.transfer_id
    assert store.transfer_for_call("twilio", "CA1") == req.transfer_id
    assert store.lead_status("L1")["status"] == "requested"  # type: ignore[index]
    score = store.r.zscore(Store.DEADLINES, req.transfer_id)
    assert score == 1000.0 + settings.deadline_seconds
    for key in (store.record_key(req.transfer_id), Store.active_key("L1"),
                Store.lead_key("L1"), Store.DEADLINES):
        assert store.r.ttl(key) > 0, key
    # the flag is the worker's to set
    assert store.get_flag("L1") is None


def test_begin_refuses_second_transfer_for_same_lead(store: Store) -> None:
    first = _req(store, lead_id="L1")
    second = _req(store, lead_id="L1")
    store.begin(first)
    assert store.begin(second) == ("busy", first.transfer_id)
    assert store.begin(first) == ("exists", "requested")


def test_begin_same_request_id_is_a_duplicate(store: Store) -> None:
    a = _req(store, lead_id="L1", request_id="r-1")
    again = _req(store, lead_id="L1", request_id="r-1")
    store.begin(a)
    store.transition(a.transfer_id, State.FAILED, "over")  # even once the lead is free
    assert store.begin(again) == ("duplicate", a.transfer_id)


def test_request_ids_are_scoped_to_their_lead(store: Store) -> None:
    # The same id on another lead is another customer's request: never silently dropped.
    a = _req(store, lead_id="L1", request_id="r-1")
    b = _req(store, lead_id="L2", request_id="r-1")
    store.begin(a)
    assert store.begin(b) == ("created", "requested")


def test_terminal_transition_is_final_and_clears_flag_and_claim(store: Store) -> None:
    req = _req(store, lead_id="L1")
    store.begin(req)
    assert store.set_flag("L1", req.transfer_number)
    assert store.r.ttl(flag_key("L1")) == 300
    assert store.transition(req.transfer_id, State.DIALING, "dial").ok
    done = store.transition(req.transfer_id, State.FAILED, "busy", fields={"reason": "busy"},
                            now=5000.0)
    assert done.ok and done.previous == "dialing"
    again = store.transition(req.transfer_id, State.SUCCEEDED, "late")
    assert not again.ok and again.previous == "failed"
    assert store.get_flag("L1") is None
    assert store.active_transfer("L1") is None
    # kept in the sweep as the outbox until its event is marked sent
    assert store.r.zscore(Store.DEADLINES, req.transfer_id) == 5000.0 + Store.OUTBOX_DELAY
    store.mark_event_sent(req.transfer_id)
    assert store.r.zscore(Store.DEADLINES, req.transfer_id) is None
    lead = store.lead_status("L1")
    assert lead is not None and lead["status"] == "failed" and lead["reason"] == "busy"
    states = [e.get("state") for e in store.timeline(req.transfer_id)]
    assert states == ["requested", "dialing", "failed"]


def test_transition_respects_from_states(store: Store) -> None:
    req = _req(store)
    store.begin(req)
    res = store.transition(req.transfer_id, State.SUCCEEDED, "x", from_states=(State.BRIDGING,))
    assert not res.ok and res.previous == "requested"
    assert store.get_transfer(req.transfer_id)["state"] == "requested"  # type: ignore[index]


def test_terminal_of_old_transfer_does_not_clear_a_newer_claim(store: Store) -> None:
    old = _req(store, lead_id="L1")
    store.begin(old)
    store.r.delete(Store.active_key("L1"))  # old claim expired
    new = _req(store, lead_id="L1")
    assert store.begin(new)[0] == "created"
    store.set_flag("L1", new.transfer_number)
    store.transition(old.transfer_id, State.FAILED, "late timeout")
    assert store.active_transfer("L1") == new.transfer_id
    assert store.get_flag("L1") == new.transfer_number


def test_flag_set_nx(store: Store) -> None:
    assert store.set_flag("L9", "+14155550101")
    assert store.set_flag("L9", "+14155550101")  # same number: a redelivery
    assert not store.set_flag("L9", "+14155550102")


def test_claim_due_leases_each_transfer_once(store: Store) -> None:
    req = _req(store)
    store.begin(req, now=0.0)
    assert store.claim_due(now=10.0) == []
    due_at = 0.0 + store.settings.deadline_seconds
    assert store.claim_due(now=due_at + 1) == [req.transfer_id]
    assert store.claim_due(now=due_at + 2) == []  # leased
    assert store.claim_due(now=due_at + 40) == [req.transfer_id]  # lease ran out


def test_number_directory(store: Store) -> None:
    store.set_number("sales", "+14155550111")
    assert store.get_number("sales") == "+14155550111"
    assert store.list_numbers()["sales"] == "+14155550111"
    assert store.delete_number("sales")
    assert store.get_number("sales") is None


def test_claim_once(store: Store) -> None:
    assert store.claim_once("x")
    assert not store.claim_once("x")
    store.release_once("x")
    assert store.claim_once("x")


_steps = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(
    ["busy", "no_answer", "declined", "voicemail"])), max_size=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 5), steps=_steps, ended_after=st.one_of(st.none(), st.integers(0, 12)),
       fallback_on=st.one_of(st.none(), st.lists(st.sampled_from(
           ["busy", "no_answer", "declined", "voicemail", "failed"]), unique=True)))
def test_moving_down_the_destinations_matches_a_model(store: Store, n: int,
                                                      steps: list[tuple[int, str]],
                                                      ended_after: int | None,
                                                      fallback_on: list[str] | None) -> None:
    """Any sequence of 'destination k not reached' reports (duplicates, stale ones, out of
    order) moves one step at a time, and only for an outcome the template's fallback_on
    names; the flag is always the current destination's number."""
    store.r.flushdb()
    numbers = [f"+1415555{200 + i:04d}" for i in range(n)]
    raw = make_request(lead_id="L1", transfer_number=None)
    raw["template"]["configurations"] = {"transfer_numbers": numbers}
    if fallback_on is not None:
        raw["template"]["configurations"]["fallback_on"] = fallback_on
    req = parse_request(raw, lambda _: "+14155550199")
    store.begin(req)
    store.set_flag("L1", numbers[0])
    store.transition(req.transfer_id, State.DIALING, "dialing")
    current, outcomes = 0, []
    for i, (seen, outcome) in enumerate(steps):
        if ended_after == i:
            store.transition(req.transfer_id, State.FAILED, "ended")
        result = store.advance_destination(req.transfer_id, seen, outcome)
        if ended_after is not None and i >= ended_after:
            assert result == ("final", -1, "")
            continue
        if seen < current:
            assert result == ("stale", current, numbers[current])
        elif current + 1 >= n or (fallback_on is not None and outcome not in fallback_on):
            assert result == ("last", current, "")
        else:
            outcomes.append(outcome)
            current += 1
            assert result == ("next", current, numbers[current])
            assert store.get_flag("L1") == numbers[current]
    attempt, tried, listed = store.destinations_tried(req.transfer_id)
    if ended_after is None or ended_after >= len(steps):
        assert (attempt, tried, listed) == (current, outcomes, numbers)


# Redis Cluster: every key a script touches is in KEYS, and all of them in one slot.

_SCRIPTS = {name: getattr(store_module, name) for name in
            ("_BEGIN", "_TRANSITION", "_SERVE_DIAL_UP", "_ADVANCE", "_CLAIM_DUE")}


@pytest.mark.parametrize("name", sorted(_SCRIPTS))
def test_scripts_name_keys_only_through_KEYS(name: str) -> None:
    calls = re.findall(r"redis\.call\('(\w+)',\s*([^,)]+)", _SCRIPTS[name])
    assert calls, name
    for command, first in calls:
        assert first.strip().startswith("KEYS[") or first.strip() == "rec", (command, first)


class _SlotRecorder:
    """Wraps a registered script: records the slots of the keys of every call."""

    def __init__(self, script: Any, seen: list[tuple[str, set[int]]], name: str) -> None:
        self.script, self.seen, self.name = script, seen, name

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        self.seen.append((self.name, {key_slot(k.encode()) for k in keys}))
        return self.script(keys=keys, args=args)


@pytest.mark.parametrize("lead", ["L1", "lead-42", "a{b}c", "x{y", "{q}"])
def test_every_script_call_hashes_to_one_slot_with_the_flag(store: Store, lead: str) -> None:
    seen: list[tuple[str, set[int]]] = []
    for attr in ("_begin", "_transition", "_serve", "_advance", "_claim_due"):
        setattr(store, attr, _SlotRecorder(getattr(store, attr), seen, attr))
    raw = make_request(lead_id=lead, transfer_number=None, request_id="r-1")
    raw["template"]["configurations"] = {"transfer_numbers": ["+14155550201", "+14155550202"]}
    req = parse_request(raw, lambda _: "+14155550199")
    assert store.begin(req) == ("created", "requested")
    assert store.set_flag(lead, "+14155550201")
    assert store.transition(req.transfer_id, State.DIALING, "dialing").ok
    rec, number = store.serve_dial_up(req.transfer_id, "served", claim="n-1")
    assert rec is not None and number == "+14155550201"
    assert store.advance_destination(req.transfer_id, 0, "busy")[0] == "next"
    assert store.get_flag(lead) == "+14155550202"
    assert store.transition(req.transfer_id, State.FAILED, "over").ok
    assert store.get_flag(lead) is None and store.active_transfer(lead) is None
    store.claim_due(now=10**10)
    assert {name for name, _ in seen} == {"_begin", "_transition", "_serve", "_advance",
                                         "_claim_due"}
    flag_slot = key_slot(flag_key(lead).encode())
    for name, slots in seen:
        assert len(slots) == 1, (name, slots)
        if name != "_claim_due":
            assert slots == {flag_slot}, name  # the flag's own slot: its name is a contract


def test_leads_sharing_a_hash_tag_share_no_key(store: Store) -> None:
    # Both flags hash on "b": same slot, but each lead keeps its own claim and status.
    a = _req(store, lead_id="a{b}c")
    b = _req(store, lead_id="x{b}y")
    assert store.begin(a) == ("created", "requested")
    assert store.begin(b) == ("created", "requested")
    assert store.active_transfer("a{b}c") == a.transfer_id
    assert store.active_transfer("x{b}y") == b.transfer_id
    assert Store.active_key("a{b}c") != Store.active_key("x{b}y")


def test_hash_part_follows_the_cluster_spec() -> None:
    assert hash_part("transfer:abc") == "transfer:abc"
    assert hash_part("{transfer:abc}:record:t1") == "transfer:abc"
    assert hash_part("a{}b") == "a{}b"  # an empty tag hashes the whole key
    assert hash_part("a{b}{c}") == "b"


def test_sentinel_url() -> None:
    target = parse_sentinel_url("redis+sentinel://:s3cret@h1:26379,h2:26380/mymaster/2")
    assert target is not None
    assert target.hosts == (("h1", 26379), ("h2", 26380))
    assert (target.master, target.db, target.password) == ("mymaster", 2, "s3cret")
    assert parse_sentinel_url("redis://localhost:6379/0") is None
    with pytest.raises(ValueError, match="master"):
        parse_sentinel_url("redis+sentinel://h1:26379")
