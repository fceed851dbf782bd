"""The sandbox refuses what Twilio refuses and tells only what Twilio tells (its REST side,
through its Flask app; callbacks go to a closed port and are not looked at here)."""

from __future__ import annotations

import time
from typing import Any

from flask.testing import FlaskClient

from sandbox import Sandbox

NOWHERE = "http://127.0.0.1:1/cb"  # refused at once


def api(sb: Sandbox) -> tuple[FlaskClient, str, tuple[str, str]]:
    base = f"/2010-04-01/Accounts/{sb.twilio_account_sid}"
    return sb.app.test_client(), base, (sb.twilio_account_sid, sb.twilio_auth_token)


def call_with(sb: Sandbox, sid: str, status: str) -> None:
    deadline = time.monotonic() + 5
    while sb.calls[sid].status != status:
        assert time.monotonic() < deadline, sb.calls[sid].status
        time.sleep(0.01)


def add_participant(sb: Sandbox, fate: str) -> dict[str, Any]:
    client, base, auth = api(sb)
    sb.set_fate("+14155550101", fate)
    resp = client.post(f"{base}/Conferences/transfer-L1/Participants.json", auth=auth, data={
        "From": "+14155550199", "To": "+14155550101", "Label": "agent",
        "MachineDetection": "Enable", "AmdStatusCallback": NOWHERE,
        "StatusCallback": NOWHERE, "ConferenceStatusCallback": NOWHERE,
        "ConferenceStatusCallbackEvent": "join"})
    assert resp.status_code == 201
    body: dict[str, Any] = resp.json
    call_with(sb, body["call_sid"], "in-progress")
    return body


def test_a_participant_update_by_friendly_name_is_404(sandbox: Sandbox) -> None:
    leg = add_participant(sandbox, "answer")
    client, base, auth = api(sandbox)
    by_name = client.post(f"{base}/Conferences/transfer-L1/Participants/{leg['call_sid']}.json",
                          auth=auth, data={"AnnounceUrl": NOWHERE})
    assert by_name.status_code == 404 and by_name.json["code"] == 20404
    by_sid = client.post(f"{base}/Conferences/{leg['conference_sid']}/Participants/"
                         f"{leg['call_sid']}.json", auth=auth, data={"AnnounceUrl": NOWHERE})
    assert by_sid.status_code == 200 and by_sid.json["conference_sid"].startswith("CF")


def test_answered_by_is_on_the_call_only_once_it_has_ended(sandbox: Sandbox) -> None:
    leg = add_participant(sandbox, "machine")
    client, base, auth = api(sandbox)
    url = f"{base}/Calls/{leg['call_sid']}.json"
    assert client.get(url, auth=auth).json["answered_by"] is None  # 21262: not while live
    client.post(url, auth=auth, data={"Status": "completed"})
    assert client.get(url, auth=auth).json["answered_by"] == "machine_start"


def test_the_verdict_goes_to_amd_status_callback_after_the_join(sandbox: Sandbox) -> None:
    leg = add_participant(sandbox, "machine")
    deadline = time.monotonic() + 5
    while not any(d.url == NOWHERE and "AnsweredBy" in d.params
                  for d in list(sandbox.deliveries)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    mine = [d for d in list(sandbox.deliveries) if d.params.get("CallSid") == leg["call_sid"]]
    kinds = [d.params.get("StatusCallbackEvent") or d.params.get("CallStatus")
             or "amd:" + d.params["AnsweredBy"] for d in mine]
    assert kinds.index("participant-join") < kinds.index("amd:machine_start")
    # Nowhere else: the leg's status callbacks do not carry it.
    assert [d for d in mine if "AnsweredBy" in d.params] == [
        d for d in mine if "MachineDetectionDuration" in d.params]
