"""The fake Telnyx Call Control v2 API: Dial (`POST /v2/calls`), the call commands we use
(`actions/bridge`, `speak`, `gather_using_speak`, `send_dtmf`, `hangup`, `streaming_stop`), the call
status (`GET /v2/calls/{id}`), and the webhooks, signed with an Ed25519 key pair the sandbox
generates (its public key is the service's TELNYX_PUBLIC_KEY).

Sources, cited per behaviour: developers.telnyx.com api-reference/call-commands/dial,
.../bridge-calls, .../streaming-stop, api/call-control/gather-using-speak,
api-reference/call-information/retrieve-a-call-status, api-reference/callbacks/call-hangup
and call-bridged, docs/voice/programmable-voice/answering-machine-detection. Where they are
silent, the least convenient plausible behaviour, said so.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask, Response, jsonify, request

from sandbox.core import DemoScript, Fate

if TYPE_CHECKING:
    from sandbox.core import Sandbox, SimCall

_ENDED = ("completed", "busy", "no-answer", "failed", "canceled")
# Speech at 150 words a minute (the usual figure for English TTS), as the Plivo model.
WORDS_PER_SECOND = 150 / 60
# How long after a gather prompt has ended the human presses the key.
PRESS_DELAY = 0.5


def speech_seconds(text: str) -> float:
    return len(text.split()) / WORDS_PER_SECOND


class TelnyxSim:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.api_key = "sandbox-telnyx-key"
        self.connection_id = "sandbox-call-control-app"
        # The account's key pair: Telnyx signs with its private key; the portal shows the
        # public one (sdk/python/webhooks: "Copy your public key from the Mission Control
        # Portal").
        self._private = Ed25519PrivateKey.generate()
        self.public_key = base64.b64encode(self._private.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)).decode()
        # A second account, with its own API key, Call Control application and key pair.
        self._second = Ed25519PrivateKey.generate()
        self.accounts: dict[str, tuple[str, Ed25519PrivateKey]] = {
            self.api_key: (self.connection_id, self._private),
            "sandbox-telnyx-key-2": ("sandbox-call-control-app-2", self._second)}
        # (call_control_id, command_id) already run: "Telnyx will ignore any command with
        # the same command_id for the same call_control_id" (bridge-calls).
        self._commands: set[tuple[str, str]] = set()

    # signed webhooks
    def sign(self, timestamp: str, body: bytes, account: str = "") -> str:
        # "Ed25519 signature of timestamp|payload" (callbacks/call-hangup, headers), with
        # the key of the account owning the call.
        key = self.accounts.get(account, (self.connection_id, self._private))[1]
        return base64.b64encode(key.sign(timestamp.encode() + b"|" + body)).decode()

    def second_owner(self) -> str:
        return "sandbox-telnyx-key-2"

    def second_account(self, url: str) -> dict[str, str]:
        """The sandbox's second account, as a CREDENTIALS_FILE entry (account.py's fields)."""
        return {"api_key": "sandbox-telnyx-key-2",
                "connection_id": "sandbox-call-control-app-2", "api_base_url": url,
                "public_key": base64.b64encode(self._second.public_key().public_bytes(
                    Encoding.Raw, PublicFormat.Raw)).decode()}

    def post(self, url: str, body: bytes, timestamp: str | None = None,
             account: str = "") -> int:
        from sandbox.core import Delivery

        ts = timestamp or str(int(time.time()))
        status = 0
        try:
            resp = self.sb.http.post(url, data=body, timeout=10, headers={
                "Content-Type": "application/json", "telnyx-timestamp": ts,
                "telnyx-signature-ed25519": self.sign(ts, body, account),
                "User-Agent": "telnyx-webhooks"})
            status = resp.status_code
        except requests.RequestException:
            status = -1
        with self.sb.lock:
            self.sb.deliveries.append(Delivery(url, {"body": body.decode()}, status,
                                               time.time()))
        return status

    def _event(self, call: SimCall, event_type: str, delay: float = 0.0,
               **fields: Any) -> None:
        """One webhook about `call`, to its webhook URL. The envelope and payload fields:
        callbacks/call-hangup and call-bridged (record_type, event_type, id, occurred_at,
        payload: call_control_id, connection_id, call_leg_id, call_session_id,
        client_state, from, to)."""
        url = call.status_callback
        if not url:
            return
        payload: dict[str, Any] = {
            "call_control_id": call.sid,
            "connection_id": self.accounts.get(call.account, (self.connection_id,))[0],
            "call_leg_id": call.flow.get("leg_id", ""),
            "call_session_id": call.flow.get("session_id", ""),
            "from": call.from_, "to": call.to, **fields}
        if call.flow.get("client_state"):
            payload["client_state"] = call.flow["client_state"]
        body = json.dumps({"data": {
            "record_type": "event", "event_type": event_type, "id": str(uuid.uuid4()),
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "payload": payload}, "meta": {"attempt": 1, "delivered_to": url}}).encode()
        # A delivery not answered 2xx is retried ("The server must return an HTTP 200,
        # otherwise we will reattempt delivery", call-hangup); a repeated delivery is the
        # same event, same id. Signed when sent (a fresh timestamp per attempt).
        for _ in range(self.sb.repeat_callbacks):
            self.sb.deliver(delay, lambda: self.post(url, body, account=call.account))

    # calls we place
    def _dial(self, call: SimCall, fate: Fate) -> None:
        # Dial's expected webhooks: call.initiated, then call.answered or call.hangup, and
        # call.machine.detection.ended with answering_machine_detection (dial).
        self._event(call, "call.initiated", direction="outgoing")
        if fate.outcome == "ignore":
            return
        call.status = "ringing"

        def outcome() -> None:
            with self.sb.lock:
                if call.status != "ringing":
                    return  # hung up while ringing
                if fate.outcome in ("answer", "machine", "decline"):
                    call.status = "in-progress"
                    call.fate = fate.outcome
                    self._event(call, "call.answered", state="answered")
                    if call.machine_detection:
                        # "Receive call.answered webhook when the call is answered either by
                        # human or machine", then call.machine.detection.ended
                        # (answering-machine-detection, order of operations).
                        result = "machine" if fate.outcome == "machine" else "human"
                        call.answered_by = result
                        self._event(call, "call.machine.detection.ended", 0.15,
                                    result=result)
                    return
                # hangup_cause: user_busy, timeout, ... with the SIP code (call-hangup).
                cause, sip = {"busy": ("user_busy", "486"), "no-answer": ("timeout", "480"),
                              "fail": ("not_found", "404")}[fate.outcome]
                self._hang_up(call, {"busy": "busy", "no-answer": "no-answer",
                                     "fail": "failed"}[fate.outcome], cause, sip, "callee")

        self.sb.scheduler.at(max(fate.ring, 0.02), outcome)

    def _hang_up(self, call: SimCall, status: str, cause: str, sip: str, source: str) -> None:
        """End a call with its call.hangup; a bridged partner hangs up too (bridge-calls,
        park_after_unbridge: "If not set, the default behavior is to hang up the leg")."""
        if call.status in _ENDED:
            return
        call.status = status
        self._event(call, "call.hangup", state="hangup", hangup_cause=cause,
                    sip_hangup_cause=sip, hangup_source=source)
        partner = self.sb.calls.get(call.flow.get("bridged_with", ""))
        if partner is not None and partner.status not in _ENDED:
            self._hang_up(partner, "completed", "normal_clearing", "unspecified", "callee")

    def _speak_then(self, call: SimCall, text: str, then: Any) -> None:
        call.spoken.append(text)
        self.sb.scheduler.at(speech_seconds(text), then, key=call.sid)

    # the customer's call
    def forge(self, method: str, url: str, form: dict[str, str], body: bytes
              ) -> dict[str, str]:
        """Headers signing this request as Telnyx does, with a key that is not the account's:
        the bad signature of the conformance suite (tests/conformance)."""
        ts = str(int(time.time()))
        other = Ed25519PrivateKey.generate()
        return {"telnyx-timestamp": ts, "telnyx-signature-ed25519": base64.b64encode(
            other.sign(ts.encode() + b"|" + body)).decode()}

    def reset(self) -> None:
        self._commands.clear()

    def new_sid(self) -> str:
        # call_control_id looks like "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_..."
        # (dial, response example).
        return "v3:" + secrets.token_urlsafe(40)

    def env(self, url: str) -> dict[str, str]:
        return {"TELNYX_API_KEY": self.api_key, "TELNYX_PUBLIC_KEY": self.public_key,
                "TELNYX_CONNECTION_ID": self.connection_id, "TELNYX_API_BASE_URL": url}

    def ended(self, call: SimCall, status: str) -> bool:
        """A customer call ended (the caller hung up): its call.hangup goes to the Call
        Control application's webhook URL (a portal setting; the sandbox takes the call's
        status callback host with the path /telnyx/webhook). A human leg still ringing is
        left ringing: nothing in the docs ends it (least convenient)."""
        if call.status_callback and not call.flow.get("webhook"):
            parts = urlsplit(call.status_callback)
            call.flow["webhook"] = urlunsplit(parts._replace(path="/telnyx/webhook"))
            call.status_callback = call.flow["webhook"]
        call.status = "in-progress"  # the core marked it ended; its call.hangup follows
        self._hang_up(call, status, "normal_clearing", "unspecified", "caller")
        return True

    def register(self, app: Flask) -> None:
        sb = self.sb

        def error(status: int, code: str, title: str) -> tuple[Response, int]:
            # {"errors": [{"code", "title", "detail"}]} (retrieve-a-call-status, default).
            return jsonify({"errors": [{"code": code, "title": title, "detail": title}]}), \
                status

        def authorized() -> str | None:
            # "Bearer authentication header of the form Bearer <token>" (dial): the account
            # whose API key it is, None for none of the hosted ones (401).
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            return key if scheme == "Bearer" and key in self.accounts else None

        def owned(call: SimCall | None, account: str) -> bool:
            # Another account's call is not found in this one.
            return call is not None and (call.account or self.api_key) == account

        @app.post("/v2/calls")
        def telnyx_dial() -> Any:
            account = authorized()
            if account is None:
                return error(401, "10009", "Authentication failed")
            body = request.get_json(silent=True) or {}
            # Required: to, from, connection_id (dial).
            if not (body.get("to") and body.get("from") and body.get("connection_id")):
                return error(422, "10015", "to, from and connection_id are required")
            if body["connection_id"] != self.accounts[account][0]:
                return error(422, "10015", "Invalid connection_id")
            timeout = int(body.get("timeout_secs", 30))
            # "Minimum value is 5 seconds. Maximum value is 120 seconds." (dial)
            if not 5 <= timeout <= 120:
                return error(422, "10015", "timeout_secs must be between 5 and 120")
            amd = body.get("answering_machine_detection", "disabled")
            from sandbox.core import SimCall

            sid = self.new_sid()
            call = SimCall(sid, str(body["to"]), str(body["from"]), "queued",
                           str(body.get("webhook_url") or "") or None, provider="telnyx",
                           account=account,
                           flow={"client_state": body.get("client_state", ""),
                                 "leg_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()),
                                 "timeout_secs": timeout, "placed_by_api": True})
            call.machine_detection = amd not in ("disabled", "", None)
            # custom_headers: "Custom headers to be added to the SIP INVITE" (dial).
            call.flow["sip_headers"] = {str(h.get("name")): str(h.get("value"))
                                        for h in body.get("custom_headers") or []
                                        if isinstance(h, dict)}
            with sb.lock:
                sb.calls[sid] = call
                fate = sb.fates.get(call.to, sb.default_fate)
            # A ring longer than timeout_secs ends as a timeout (dial: "If the timeout is
            # reached before an answer is received, the call will hangup ... timeout").
            if fate.ring > timeout and fate.outcome != "ignore":
                fate = Fate("no-answer", float(timeout))
            sb.scheduler.at(0.01, lambda: self._dial(call, fate), key=sid)
            return jsonify({"data": {"call_control_id": sid, "call_leg_id": call.flow["leg_id"],
                                     "call_session_id": call.flow["session_id"],
                                     "is_alive": False, "record_type": "call"}})

        @app.get("/v2/calls/<path:ccid>")
        def telnyx_status(ccid: str) -> Any:
            account = authorized()
            if account is None:
                return error(401, "10009", "Authentication failed")
            call = sb.calls.get(ccid)
            if call is None or call.provider != "telnyx" or not owned(call, account):
                return error(404, "10005", "Resource not found")
            return jsonify({"data": {
                "call_control_id": ccid, "call_leg_id": call.flow.get("leg_id", ""),
                "call_session_id": call.flow.get("session_id", ""),
                "client_state": call.flow.get("client_state", ""),
                "is_alive": call.status not in _ENDED, "record_type": "call"}})

        @app.post("/v2/calls/<path:ccid>/actions/<action>")
        def telnyx_action(ccid: str, action: str) -> Any:
            account = authorized()
            if account is None:
                return error(401, "10009", "Authentication failed")
            body = request.get_json(silent=True) or {}
            with sb.lock:
                call = sb.calls.get(ccid)
                if (call is None or call.provider != "telnyx" or call.status in _ENDED
                        or not owned(call, account)):
                    # 90018 "Call has already ended" (least convenient: a 422 for every
                    # command on a call that is over).
                    return error(422, "90018", "Call has already ended")
                command = str(body.get("command_id") or "")
                if command and (ccid, command) in self._commands:
                    return jsonify({"data": {"result": "ok"}})
                if body.get("client_state"):
                    call.flow["client_state"] = body["client_state"]
                answer = self._action(call, action, body)
                if answer is None and command:
                    self._commands.add((ccid, command))
            return answer or jsonify({"data": {"result": "ok"}})

    def _action(self, call: SimCall, action: str, body: dict[str, Any]) -> Any:
        sb = self.sb

        def error(code: str, title: str) -> tuple[Response, int]:
            return jsonify({"errors": [{"code": code, "title": title}]}), 422

        if action == "hangup":
            ringing = call.status in ("queued", "ringing")
            cause = "originator_cancel" if ringing else "normal_clearing"
            sb.scheduler.at(0.01, lambda: self._hang_up(
                call, "canceled" if ringing else "completed", cause, "487" if ringing
                else "unspecified", "caller"), key=call.sid)
            return None
        if action == "streaming_stop":
            # A call without a stream: a 422 (the docs are silent; least convenient).
            if not call.flow.get("streaming", call.flow.get("placed_by_api") is None):
                return error("90046", "No stream to stop")
            call.flow["streaming"] = False
            call.spoken.append("[streaming stopped]")
            return None
        if action == "send_dtmf":
            # digits required: "Valid digits are 0-9, A-D, *, and #. Pauses can be added
            # using w (0.5s) and W (1s)"; duration_millis "Ranges from 100 to 500ms",
            # default 250; "There are no webhooks associated with this command"
            # (api-reference/call-commands/send-dtmf).
            digits = str(body.get("digits") or "")
            millis = int(body.get("duration_millis") or 250)
            if not digits or set(digits) - set("0123456789ABCD*#wW") or \
                    not 100 <= millis <= 500:
                return error("10015", "invalid digits or duration_millis")
            if call.status != "in-progress":
                return error("90018", "Call is not answered")
            call.spoken.append(f"[dtmf {digits}]")
            # The gap between tones is not documented: none (the shortest playout, so a
            # command sent too early is caught).
            call.flow["dtmf_until"] = time.time() + (
                sum(1 for c in digits if c not in "wW") * millis / 1000
                + digits.count("w") * 0.5 + digits.count("W") * 1.0)
            return None
        if action in ("speak", "gather_using_speak"):
            if call.status != "in-progress":
                return error("90018", "Call is not answered")
            if time.time() < float(call.flow.get("dtmf_until", 0)):
                # Not documented whether speech waits for the tones: it does not.
                call.spoken.append("[spoken over the digits]")
            payload = str(body.get("payload") or "")
            # payload and voice are required (gather-using-speak).
            if not payload or not body.get("voice"):
                return error("10015", "payload and voice are required")
            if action == "speak":
                # call.speak.ended, status completed (speak's expected webhook).
                self._speak_then(call, payload, lambda: self._event(
                    call, "call.speak.ended", status="completed"))
                return None
            key = sb.keys.get(call.to, "1")
            valid = str(body.get("valid_digits") or "0123456789*#")
            wait = int(body.get("timeout_millis") or 60000) / 1000

            def gathered() -> None:
                if call.status in _ENDED:
                    return
                if call.fate == "decline":
                    # Nobody presses: call.gather.ended with status timeout (gather statuses:
                    # valid, invalid, call_hangup, cancelled, cancelled_amd, timeout).
                    sb.scheduler.at(wait, lambda: self._event(
                        call, "call.gather.ended", digits="", status="timeout"))
                    return
                self._event(call, "call.dtmf.received", PRESS_DELAY, digit=key)
                self._event(call, "call.gather.ended", PRESS_DELAY, digits=key,
                            status="valid" if key in valid else "invalid")

            self._speak_then(call, payload, gathered)
            return None
        if action == "bridge":
            other = sb.calls.get(str(body.get("call_control_id") or ""))
            if other is None or other.status != "in-progress" or call.status != "in-progress":
                return error("90018", "Call to bridge with is not active")
            call.flow["bridged_with"], other.flow["bridged_with"] = other.sid, call.sid
            # "call.bridged for Leg A, call.bridged for Leg B" (bridge-calls).
            self._event(call, "call.bridged", 0.01, state="bridged")
            self._event(other, "call.bridged", 0.01, state="bridged")
            return None
        return error("10015", f"unknown action {action}")


Model = TelnyxSim

# What `warm-transfer demo` plays on Telnyx.
DEMO = DemoScript(scenarios=(
    (("answer-after:1",), {}, "the human answers and is bridged"),
    (("busy", "answer-after:1"), {}, "the first line is busy, the second answers"),
    (("machine-after:1", "answer-after:1"), {"voicemail_detection": True},
     "a voicemail picks up and is skipped; the second line answers"),
    (("answer-after:2|answer-after:1",), {},
     "a ring group: both ring at once, the second answers first"),
# The Call Control application's one webhook URL carries the customer call's events too.
), status_path="webhook")
