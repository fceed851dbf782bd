"""The dial skeleton every provider shares (providers.base.place_leg)."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.base import (
    PermanentProviderError,
    TransientProviderError,
    account_for,
    place_leg,
)
from providers.telnyx.account import TelnyxAccount
from shared.config import Settings
from shared.contracts import parse_request
from shared.model import State, Transfer
from shared.store import Store
from tests.helpers import make_request, make_transfer
from workers.runtime import Runtime

PRE_BRIDGE = (State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED)


def begun(store: Store, lead: str, **fields: str) -> Transfer:
    req = parse_request(make_request(lead_id=lead, provider="telnyx"), store.get_number)
    store.begin(req)
    if fields:
        store.set_fields(req.transfer_id, **fields)
    record = store.get_record(req.transfer_id)
    assert record is not None
    return record


def test_a_leg_of_an_interrupted_attempt_is_found_not_dialed_again(rt: Runtime,
                                                                    store: Store) -> None:
    record = begun(store, "L-found", dial_attempted="0", agent_call_sid="leg-1")
    dialed: list[str] = []
    place_leg(rt, record, "0", provider="telnyx", pre_bridge=PRE_BRIDGE, note="dialing",
              find=lambda: record.agent_call_sid or None,
              dial=lambda: dialed.append("x") or {"agent_call_sid": "leg-2"})
    raw = store.get_transfer(record.transfer_id) or {}
    assert dialed == [] and (raw["state"], raw["placed"], raw["agent_call_sid"]) == (
        "dialing", "0", "leg-1")
    assert store.transfer_for_call("telnyx", "leg-1") == record.transfer_id


def test_a_dial_records_its_leg_and_a_refusal_clears_the_marker(rt: Runtime,
                                                                store: Store) -> None:
    record = begun(store, "L-dial")
    place_leg(rt, record, "0", provider="telnyx", pre_bridge=PRE_BRIDGE, note="dialing",
              dial=lambda: {"agent_call_sid": "leg-9"})
    raw = store.get_transfer(record.transfer_id) or {}
    assert (raw["state"], raw["dial_attempted"], raw["agent_call_sid"]) == (
        "dialing", "0", "leg-9")
    assert store.transfer_for_call("telnyx", "leg-9") == record.transfer_id

    def refused() -> dict[str, str]:
        raise PermanentProviderError("telnyx 422: refused", status=422)

    def unanswered() -> dict[str, str]:
        raise TransientProviderError("telnyx unreachable", outcome_unknown=True)

    other = begun(store, "L-refused")
    with pytest.raises(PermanentProviderError):
        place_leg(rt, other, "0", provider="telnyx", pre_bridge=PRE_BRIDGE, note="dialing",
                  dial=refused)
    assert (store.get_transfer(other.transfer_id) or {}).get("dial_attempted") == ""
    with pytest.raises(TransientProviderError):
        place_leg(rt, other, "0", provider="telnyx", pre_bridge=PRE_BRIDGE, note="dialing",
                  dial=unanswered)
    # No answer: the leg may be out, so the marker stays for the retry to look.
    assert (store.get_transfer(other.transfer_id) or {}).get("dial_attempted") == "0"


def test_a_broken_credential_source_at_dial_time_is_transient(
        settings: Settings, tmp_path: Path) -> None:
    # The operator's broken CREDENTIALS_FILE: the task retries (and the transfer fails at
    # its deadline if nobody fixes it), never "no credentials" for the transfer's account.
    broken = tmp_path / "accounts.json"
    broken.write_text("{not json")
    bad = settings.model_copy(update={"credentials_file": str(broken)})
    with pytest.raises(TransientProviderError, match="credentials unavailable"):
        account_for(bad, "telnyx", make_transfer(provider="telnyx", account="acme"),
                    TelnyxAccount, "TELNYX_API_KEY")
