"""The typed transfer record and its one conversion to and from the Redis hash."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from shared.contracts import TransferRequest, parse_request
from shared.model import Cause, State, Transfer
from shared.store import Store
from tests.helpers import make_request


def req(store: Store, numbers: list[str] | None = None, **kw: Any) -> TransferRequest:
    raw = make_request(**kw)
    if numbers:
        raw["template"]["configurations"] = {"transfer_numbers": numbers}
    return parse_request(raw, store.get_number)  # type: ignore[arg-type]


def test_a_begun_transfer_reads_back_typed_and_writes_back_the_same_strings(
        store: Store) -> None:
    request = req(store, lead_id="L1")
    store.begin(request, now=1000.5)
    raw = store.get_transfer(request.transfer_id)
    record = store.get_record(request.transfer_id)
    assert raw is not None and record is not None
    assert record.state is State.REQUESTED
    assert (record.attempt, record.started_at, record.screening) == (0, 1000.5, False)
    assert record.destination == request.transfer_number
    assert record.to_hash() == raw  # nothing in Redis changes shape


def test_flags_and_unknown_fields_survive_a_round_trip() -> None:
    raw = {"transfer_id": "t", "lead_id": "l", "provider": "plivo", "call_id": "c",
           "state": "dialing", "screening": "1", "attempt": "1",
           "destinations": '["+15550001", "+15550002"]', "picked_up_1": "12.5"}
    record = Transfer.from_hash(raw)
    assert record.screening and not record.voicemail_detection
    assert record.destination == "+15550002"
    assert record.extra == {"picked_up_1": "12.5"}
    assert {k: v for k, v in record.to_hash().items() if k in raw} == raw


def test_moving_on_clears_the_generic_and_the_providers_leg_fields(
        store: Store) -> None:
    request = req(store, ["+14155550201", "+14155550202"], lead_id="L2")
    tid = request.transfer_id
    store.begin(request)
    store.set_fields(tid, agent_call_sid="CA1", conference_sid="CF1", kept="yes")
    assert store.advance_destination(tid, 0, "busy", leg_fields=("conference_sid",)
                                     )[:2] == ("next", 1)
    raw = store.get_transfer(tid) or {}
    assert ("agent_call_sid" in raw, "conference_sid" in raw, raw.get("kept")) == (
        False, False, "yes")


def test_a_cause_keeps_only_what_the_provider_gave() -> None:
    from shared.model import Cause

    assert Cause.of("486", "user_busy") == Cause(486, "user_busy")
    assert Cause.of("", None) is None and Cause.of(None, "  ") is None
    assert Cause.of("48", None) is None and Cause.of("700", None) is None  # not a SIP code
    assert Cause.of("x", "NO_ANSWER") == Cause(None, "NO_ANSWER")
    assert Cause.from_json(Cause(603, None).to_json()) == Cause(603, None)
    assert Cause.from_json("not json") is None and Cause.from_json("[1]") is None


def every_field_set() -> Transfer:
    return Transfer(
        transfer_id="tr_1", lead_id="L9", provider="telnyx", call_id="v3:c", state=State.DIALING,
        transfer_number="+14155550101", outbound_number="+14155550100", summary="hi",
        request_id="r1", started_at=1000.25, voicemail_detection=True, screening=True,
        screening_key="#", screening_timeout=12,
        destinations=("+14155550101", "+14155550102,sip:desk@example.com"), attempt=1,
        attempt_known=True, ring_timeouts=(20, 30), caller_number="+14155550103",
        hold_audio="https://example.com/hold.mp3", fallback_on="busy,no_answer",
        agent_call_sid="CA1", dial_attempted="1", placed="1", declined=True,
        dial_up_served=True, account="acme", handoff="agent_first", extensions=("", "12#"),
        sip_headers=(("X-Team", "sales"),),
        # One provider's own bookkeeping, and the store's.
        extra={"group_legs": '{"1": ["a", "b"]}', "customer_moved": "1", "member": "1",
               "conference_sid": "CF1", "cause:0": "[486, null]", "tried": "busy",
               "created_at": "2026-01-01T00:00:00.000Z", "event_sent": "1"})


def test_a_record_with_every_field_set_survives_a_round_trip() -> None:
    record = every_field_set()
    assert Transfer.from_hash(record.to_hash()) == record
    unknown = Transfer.from_hash({**record.to_hash(), "attempt": ""})
    assert (unknown.attempt_known, unknown.to_hash()["attempt"]) == (False, "")


def test_defaults_stay_out_of_the_hash_as_before() -> None:
    raw = Transfer(transfer_id="t", lead_id="l", provider="plivo", call_id="c",
                   state=State.REQUESTED).to_hash()
    assert not {"account", "handoff", "extensions", "sip_headers"} & set(raw)


def test_every_field_the_store_writes_is_typed_or_kept_in_extra(store: Store) -> None:
    request = req(store, ["+14155550201", "+14155550202"], lead_id="L3")
    tid = request.transfer_id
    store.begin(request)
    # What the providers and the store's scripts write on top of what begin wrote.
    store.set_fields(tid, agent_call_sid="CA1", dial_attempted="0", placed="0",
                     group_legs='{"0": ["a"]}', customer_moved="1", member="0")
    store.transition(tid, State.DIALING, "dialing", fields={"reason": "x"})
    store.advance_destination(tid, 0, "busy", cause=Cause(486, None))
    store.mark_event_sent(tid)
    raw = store.get_transfer(tid) or {}
    record = store.get_record(tid)
    assert record is not None
    names = {f.name for f in fields(Transfer)} - {"extra", "attempt_known"}
    # Each field is typed or in extra, never both (a typed one left in extra would shadow).
    assert set(record.extra) == set(raw) - names
    assert {"tried", "cause:0", "event_sent", "group_legs", "member"} <= set(record.extra)
    # Every typed field reads back to the same string, every other one is in extra.
    assert {k: v for k, v in record.to_hash().items() if k in raw} == raw
    assert record.attempt == 1 and record.destination == "+14155550202"
