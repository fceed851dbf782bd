"""The typed transfer record and its one conversion to and from the Redis hash."""

from __future__ import annotations

from typing import Any

from shared.contracts import TransferRequest, parse_request
from shared.model import State, Transfer
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
