"""Provider accounts over the real stack: each provider's sandbox hosts two accounts with
credentials of their own; transfers of both run at once, each provider request is
authenticated as its own account (the sandbox answers another account's credentials 401 and
another account's call 404) and each callback is signed with its own account's secret (our
webhooks refuse another's, 403); an unknown account is refused before any provider request."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.helpers import fictional_number, make_request, unique_lead
from tests.integration.conftest import Stack
from tests.stack import SECOND

OUTBOUND = {"exotel": "+919999900001"}


def _agent(provider: str) -> str:
    if provider == "exotel":
        return f"+9199999{fictional_number()[-5:]}"
    return fictional_number()


def _transfer(stack: Stack, provider: str, account: str | None, fate: str = "answer"
              ) -> tuple[str, str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider=provider, account=account)
    number = _agent(provider)
    stack.sandbox.set_fate(number, fate)
    extra: dict[str, Any] = {"provider_account": account} if account else {}
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number,
        outbound_number=OUTBOUND.get(provider, "+14155550199"), outbound_number_id=None,
        provider=provider, **extra))
    assert result["status"] == "transfer_requested", result
    return str(result["transfer_id"]), call_id


@pytest.mark.parametrize("provider", ["twilio", "plivo", "exotel", "telnyx"])
def test_two_accounts_at_once_each_as_itself(stack: Stack, provider: str) -> None:
    refused_before = _signature_failures(stack, provider)
    with ThreadPoolExecutor(4) as pool:
        started = list(pool.map(lambda a: _transfer(stack, provider, a),
                                [None, SECOND, None, SECOND]))
    for (tid, _), account in zip(started, [None, SECOND, None, SECOND], strict=True):
        event = stack.terminal(tid, timeout=15)
        assert event["type"] == "transfer.succeeded", (account, event)
        record = stack.store.get_transfer(tid)
        assert record is not None and record.get("account") == account
        assert stack.store.lead_report(record["lead_id"])["account"] == (  # type: ignore[index]
            account or "default")
    # No callback was refused: each was signed with its own account's secret and checked
    # with the secret of the account its URL names.
    assert _signature_failures(stack, provider) == refused_before
    if provider == "twilio":
        second = stack.sandbox.twilio.second_owner()
        paths = {r.path for r in stack.sandbox.api_requests("/Participants.json")}
        for (_, call_id), account in zip(started, [None, SECOND, None, SECOND], strict=True):
            [move] = stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="POST")
            assert (second in move.path) == (account is not None)
        assert any(second in p for p in paths) and any(second not in p for p in paths)


@pytest.mark.parametrize("provider", ["twilio", "plivo", "exotel", "telnyx"])
def test_the_second_accounts_unreached_human_is_reported(stack: Stack, provider: str) -> None:
    before = _signature_failures(stack, provider)
    tid, _ = _transfer(stack, provider, SECOND, "busy")
    event = stack.terminal(tid, timeout=15)
    assert event["type"] == "transfer.failed" and event["reason"] != "timeout", event
    assert _signature_failures(stack, provider) == before


def _signature_failures(stack: Stack, provider: str) -> float:
    import requests

    text = requests.get(f"{stack.settings.public_base_url}/metrics", timeout=5).text
    line = f'warm_transfer_signature_failures_total{{provider="{provider}"}}'
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


def test_a_callback_signed_by_the_other_account_is_refused(stack: Stack) -> None:
    import requests
    from twilio.request_validator import RequestValidator

    url = f"{stack.settings.public_base_url}/twilio/agent-status?transfer_id=tr_x&account={SECOND}"
    params = {"CallSid": "CA" + "7" * 32, "CallStatus": "busy",
              "AccountSid": stack.sandbox.twilio.second_owner()}
    for token, status in ((stack.sandbox.twilio_auth_token, 403),
                          (stack.sandbox.twilio_accounts[params["AccountSid"]], 204)):
        sig = RequestValidator(token).compute_signature(url, params)
        resp = requests.post(url, data=params, headers={"X-Twilio-Signature": sig}, timeout=5)
        assert resp.status_code == status


@pytest.mark.parametrize("provider", ["twilio", "plivo", "exotel", "telnyx"])
def test_an_unknown_account_is_refused_without_a_provider_request(stack: Stack,
                                                                  provider: str) -> None:
    before = len(stack.sandbox.requests)
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=unique_lead(), provider=provider, provider_account="nobody",
        outbound_number=OUTBOUND.get(provider, "+14155550199"), outbound_number_id=None))
    assert (result["status"], result["error"]) == ("error", "unknown_provider_account")
    assert len(stack.sandbox.requests) == before
