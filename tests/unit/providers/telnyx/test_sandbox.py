"""The Telnyx sandbox refuses what the docs say Telnyx refuses, and signs what it sends so
that our own check accepts it (its REST side through its Flask app; webhooks go to a closed
port and are not looked at here)."""

from __future__ import annotations

import time

from providers.telnyx.signature import verify
from sandbox import Sandbox

NOWHERE = "http://127.0.0.1:1/telnyx/webhook"


def headers(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.telnyx.api_key}"}


def dial(sb: Sandbox, **overrides: object) -> tuple[int, dict[str, object]]:
    body = {"connection_id": sb.telnyx.connection_id, "to": "+14155550101",
            "from": "+14155550199", "timeout_secs": 10, "webhook_url": NOWHERE, **overrides}
    resp = sb.app.test_client().post("/v2/calls", json=body, headers=headers(sb))
    return resp.status_code, resp.get_json()


def test_its_signatures_verify_with_the_key_it_gives_the_service(sandbox: Sandbox) -> None:
    env = sandbox.telnyx.env("http://sandbox")
    ts = str(int(time.time()))
    body = b'{"data": {"event_type": "call.answered"}}'
    verify(env["TELNYX_PUBLIC_KEY"], body, sandbox.telnyx.sign(ts, body), ts)


def test_dial_needs_the_api_key_and_the_documented_fields(sandbox: Sandbox) -> None:
    client = sandbox.app.test_client()
    assert client.post("/v2/calls", json={}).status_code == 401
    assert dial(sandbox, to="")[0] == 422
    assert dial(sandbox, connection_id="other")[0] == 422
    assert dial(sandbox, timeout_secs=4)[0] == 422  # "Minimum value is 5 seconds"
    assert dial(sandbox, timeout_secs=121)[0] == 422  # "Maximum value is 120 seconds"
    status, answer = dial(sandbox)
    assert status == 200
    data = answer["data"]
    assert isinstance(data, dict) and str(data["call_control_id"]).startswith("v3:")


def test_commands_on_an_ended_call_are_refused_and_repeats_ignored(sandbox: Sandbox) -> None:
    sandbox.set_fate("+14155550101", "busy")
    _, answer = dial(sandbox)
    ccid = str(answer["data"]["call_control_id"])  # type: ignore[index]
    client = sandbox.app.test_client()
    url = f"/v2/calls/{ccid}/actions/hangup"
    assert client.post(url, json={"command_id": "c1"}, headers=headers(sandbox)).status_code \
        == 200
    # The same command_id again: ignored, "ok" (bridge-calls).
    assert client.post(url, json={"command_id": "c1"}, headers=headers(sandbox)).status_code \
        == 200
    deadline = time.monotonic() + 5
    while sandbox.calls[ccid].status not in ("canceled", "busy"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    resp = client.post(url, json={"command_id": "c2"}, headers=headers(sandbox))
    assert resp.status_code == 422
