"""The fake Exotel: a flow with a Voicebot applet followed by a Connect applet (its "Dial whom"
URL, or its programmable-connect dynamic URL), an optional Passthru after Connect, the status
callback of calls placed through the API (form or JSON, with legs), and the call details API.

Where Exotel's documentation is silent the sandbox takes the least convenient plausible
behaviour, and says so next to it."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, jsonify, request

from sandbox.core import DemoScript

if TYPE_CHECKING:
    from sandbox.core import Sandbox, SimCall

_ENDED = ("completed", "busy", "no-answer", "failed", "canceled")
# What the dynamic URL's request carries: support.exotel.com/support/solutions/articles/
# 3000096873 ("Header: Exotel-Version ... Current Version: 1.0").
EXOTEL_VERSION = "1.0"


def national(number: str) -> str:
    """How Exotel writes a number in its requests: Indian numbers in national format, "0" and
    ten digits (developer.exotel.com/docs/voice-v1/api-reference/call-details: "To":
    "0XXXXX38847"; support.exotel.com/support/solutions/articles/56523: <To>09052161119</To>).
    Others as given (no Exotel source shows them)."""
    if number.startswith("+91") and len(number) == 13:
        return "0" + number[3:]
    return number


def _one_number(text: str) -> str | None:
    """A "Dial whom" URL answers "a number to be dialed" (support.exotel.com/support/
    solutions/articles/3000088074); whether a list is taken is undocumented, so only a body
    that is one number is dialed (least convenient)."""
    text = text.strip()
    digits = text.removeprefix("+")
    return text if digits.isdigit() and 8 <= len(digits) <= 15 else None


class ExotelSim:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        # Exotel says callbacks "may be delayed or fail"
        # (developer.exotel.com/docs/voice-v1/api-reference/status-callback): drop them to
        # test reconciliation.
        self.drop_status_callbacks = False

    def _request(self, method: str, url: str, params: dict[str, str] | None = None,
                 json_body: Any = None, form: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        from sandbox.core import Delivery

        if params:
            url = url + ("&" if "?" in url else "?") + urlencode(params)
        try:
            resp = self.sb.http.request(method, url, json=json_body, data=form, timeout=10,
                                        headers={"User-Agent": "Exotel", **(headers or {})})
            result = (resp.status_code, resp.text, resp.headers.get("Content-Type", ""))
        except requests.RequestException:
            result = (-1, "", "")
        with self.sb.lock:
            self.sb.deliveries.append(Delivery(url, dict(form or json_body or params or {}),
                                               result[0], time.time()))
        return result

    def _call_params(self, call: SimCall) -> dict[str, str]:
        """The call's query parameters on every applet URL (support.exotel.com/support/
        solutions/articles/3000088074 and .../48283): numbers in national format."""
        params = {"CallSid": call.sid, "CallFrom": national(call.from_),
                  "CallTo": national(call.to), "From": national(call.from_),
                  "To": national(call.to), "Direction": "incoming",
                  "CurrentTime": time.strftime("%Y-%m-%d %H:%M:%S")}
        if call.flow.get("custom_field"):
            # Set by the Calls/connect request that placed the call, "Not applicable for IB
            # calls" (support.exotel.com/support/solutions/articles/48285).
            params["CustomField"] = str(call.flow["custom_field"])
        return params

    def ai_disconnected(self, sid: str) -> None:
        """The platform closed the Voicebot applet's stream: the flow goes on to Connect."""
        call = self.sb.calls.get(sid)
        if call is None or call.provider != "exotel" or call.status in _ENDED:
            return
        self.sb.scheduler.at(0.01, lambda: self._connect(call), key=call.sid)

    def _connect(self, call: SimCall) -> None:
        """The Connect applet asks whom to dial. Flow "connect_mode": "dial_whom" (default: the
        "Dial whom" URL, answered with a number as text) or "programmable" (the dynamic URL:
        an Exotel-Version header, answered with JSON; support.exotel.com/support/solutions/
        articles/3000096873)."""
        url = call.flow.get("dial_whom_url")
        if not url:
            return
        programmable = call.flow.get("connect_mode") == "programmable"
        params = {**self._call_params(call), "DialWhomNumber": ""}
        headers = {"Exotel-Version": EXOTEL_VERSION} if programmable else {}
        # HEAD first: URL applets "MUST support a HEAD request from Exotel" (support.exotel.
        # com/support/solutions/articles/48285 and .../3000106202); for this URL undocumented.
        head_status, _, head_type = self._request("HEAD", url, params, headers=headers)
        status, text, content_type = self._request("GET", url, params, headers=headers)
        numbers = self._numbers(programmable, status, text, content_type)
        if numbers is None and programmable and call.flow.get("fallback_url"):
            # "a 'Fallback URL' (optional) which will be contacted in case something goes
            # wrong with your 'Primary URL'" (article 3000096873).
            status, text, content_type = self._request("GET", call.flow["fallback_url"],
                                                       params, headers=headers)
            numbers = self._numbers(programmable, status, text, content_type)
        call.flow["dial_up"] = {"head": head_status, "get": status, "type": content_type,
                                "head_type": head_type}
        if not numbers:
            # No one to dial: the flow takes the Connect applet's next applet, which the
            # operator points back to the AI (Exotel: "you'll need to configure the
            # transitions (next applet) while building the flow irrespective", 3000096873).
            call.flow["leg2"] = ""
            self._after_connect(call, "incomplete")
            return
        self._ring(call, numbers)

    @staticmethod
    def _numbers(programmable: bool, status: int, text: str, content_type: str
                 ) -> list[str] | None:
        """The numbers Exotel would dial from this answer, or None where it would refuse it:
        JSON only from the dynamic URL, text only from the "Dial whom" URL."""
        if status != 200:
            return None
        if programmable:
            if "json" not in content_type:
                return None
            try:
                # Validated against the Exotel-Version schema (3000096873).
                numbers = json.loads(text)["destination"]["numbers"]
            except (ValueError, KeyError, TypeError):
                return None
            if not isinstance(numbers, list) or not numbers:
                return None
            return [str(n) for n in numbers]
        one = _one_number(text) if "json" not in content_type else None
        return [one] if one else None

    def _ring(self, call: SimCall, numbers: list[str]) -> None:
        """Connect dials the numbers one after another until one answers."""
        number = numbers[0]
        call.flow["dialed"] = number
        call.flow.setdefault("tried", []).append(number)
        call.flow["leg2"] = "ringing"
        fate = self.sb.fates.get(number, self.sb.default_fate)
        if fate.outcome == "ignore":
            return

        def outcome() -> None:
            with self.sb.lock:
                if call.status in _ENDED or call.flow.get("leg2") != "ringing":
                    return
                # Exotel cannot tell a voicemail from a human: it is answered too.
                if fate.outcome in ("answer", "machine"):
                    call.flow["leg2"] = "in-progress"
                    call.flow["answered_at"] = time.time()
                    return
                call.flow["leg2"] = {"fail": "failed", "decline": "no-answer"}.get(
                    fate.outcome, fate.outcome)
                if len(numbers) > 1:
                    self.sb.scheduler.at(0.01, lambda: self._ring(call, numbers[1:]))
                    return
            self._after_connect(call, "incomplete")

        self.sb.scheduler.at(max(fate.ring, 0.02), outcome)

    def _after_connect(self, call: SimCall, call_type: str) -> None:
        """The Connect applet is over while the caller is still on: its Passthru (if the flow
        has one) reports it, then the flow goes on. After a conversation the flow ends; after
        a Connect that reached no one it goes back to the AI (as the README configures)."""
        self._passthru(call, call_type)
        if call_type == "completed":
            self.sb._end_call(call.sid, "completed")
        else:
            call.flow["back_to_ai"] = True

    def _passthru(self, call: SimCall, call_type: str) -> None:
        """A Passthru after Connect: GET with the call's parameters, CallType saying how the
        Connect went and DialWhomNumber the number dialed last; no DialCallStatus (support.
        exotel.com/support/solutions/articles/48283)."""
        url = call.flow.get("passthru_url")
        if url:
            self._request("GET", url, {
                **self._call_params(call), "CallType": call_type,
                "DialWhomNumber": national(call.flow.get("dialed", "")),
                "DialCallDuration": str(self._leg2_duration(call)),
                "EndTime": "1970-01-01 05:30:00"})  # "a constant value" (48283)

    @staticmethod
    def _leg2_duration(call: SimCall) -> int:
        answered = call.flow.get("answered_at")
        return int(time.time() - answered) + 1 if answered else 0

    def _legs(self, call: SimCall) -> list[dict[str, Any]]:
        legs: list[dict[str, Any]] = [{"Status": "completed", "OnCallDuration": 5}]
        if call.flow.get("dialed"):
            legs.append({"Status": call.flow.get("leg2", ""),
                         "OnCallDuration": self._leg2_duration(call)})
        return legs

    def human_hangs_up(self, call: SimCall) -> None:
        """The human ends the conversation first: the Connect applet is over with the caller
        still on, so the Passthru after it runs (CallType "completed")."""
        with self.sb.lock:
            if call.flow.get("leg2") != "in-progress" or call.status in _ENDED:
                return
            call.flow["leg2"] = "completed"
        self._after_connect(call, "completed")

    def forge(self, method: str, url: str, form: dict[str, str], body: bytes
              ) -> dict[str, str]:
        """Exotel signs nothing: its URLs' token is the secret, so a forged request is one
        with a wrong token (the conformance suite's query has one) and no headers."""
        return {}

    def reset(self) -> None:
        self.drop_status_callbacks = False

    def new_sid(self) -> str:
        # CallSids are 32 hex digits ("b6cfaf5f5cef3ca0fc937749ef960e25",
        # developer.exotel.com/api/call-details).
        return uuid.uuid4().hex

    def accounts(self) -> dict[str, tuple[str, str]]:
        """The hosted accounts, account SID -> (API key, API token): the first and a second."""
        from sandbox.core import EXOTEL_SECOND_KEY, EXOTEL_SECOND_SID, EXOTEL_SECOND_TOKEN

        return {self.sb.exotel_account_sid: (self.sb.exotel_api_key, self.sb.exotel_api_token),
                EXOTEL_SECOND_SID: (EXOTEL_SECOND_KEY, EXOTEL_SECOND_TOKEN)}

    def second_owner(self) -> str:
        from sandbox.core import EXOTEL_SECOND_SID

        return EXOTEL_SECOND_SID

    def second_account(self, url: str) -> dict[str, str]:
        """The sandbox's second account, as a CREDENTIALS_FILE entry (account.py's fields);
        its webhook token is ours to choose, the one its flow's URLs carry."""
        from sandbox.core import EXOTEL_SECOND_KEY, EXOTEL_SECOND_SID, EXOTEL_SECOND_TOKEN

        return {"account_sid": EXOTEL_SECOND_SID, "api_key": EXOTEL_SECOND_KEY,
                "api_token": EXOTEL_SECOND_TOKEN, "api_base_url": url,
                "webhook_token": "sandbox-exotel-webhook-2"}

    def env(self, url: str) -> dict[str, str]:
        return {"EXOTEL_ACCOUNT_SID": self.sb.exotel_account_sid,
                "EXOTEL_API_KEY": self.sb.exotel_api_key,
                "EXOTEL_API_TOKEN": self.sb.exotel_api_token,
                "EXOTEL_API_BASE_URL": url,
                # Exotel signs nothing: its URLs carry this secret (the operator's, if set).
                "EXOTEL_WEBHOOK_TOKEN": os.environ.get("EXOTEL_WEBHOOK_TOKEN")
                or "sandbox-webhook"}

    def ended(self, call: SimCall, status: str) -> bool:
        self._ended(call, status)
        return True

    def _ended(self, call: SimCall, status: str) -> None:
        """The customer's call is over: the human's leg with it, then the callbacks. A caller
        who hangs up ends the flow, so no Passthru runs after it (undocumented; the least
        convenient)."""
        if call.flow.get("leg2") == "in-progress":
            legs = self._legs(call)
            call.flow["leg2"] = "completed"
            legs[1]["Status"] = "completed"
        else:
            if call.flow.get("leg2") == "ringing":
                # "canceled: The caller disconnected the call during a dial attempt or ringing
                # the destination number" (support.exotel.com/support/solutions/articles/27323).
                call.flow["leg2"] = "canceled"
            legs = self._legs(call)
        url = call.status_callback
        if not url or self.drop_status_callbacks:
            return
        # StatusCallback exists only for calls placed through the API ("When making a call
        # via the API, pass a StatusCallback URL parameter", developer.exotel.com/docs/
        # voice-v1/api-reference/status-callback): a call without one never reports here.
        body: dict[str, Any] = {"CallSid": call.sid, "Status": status,
                                "DateUpdated": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "EventType": "terminal", "RecordingUrl": "",
                                "From": national(call.from_), "To": national(call.to),
                                "Direction": "outbound-api",  # "All other Outbound calls (API…)"
                                "ConversationDuration": self._leg2_duration(call),
                                "Legs": legs}
        if call.flow.get("custom_field"):
            body["CustomField"] = str(call.flow["custom_field"])  # as set in the API request
        if call.flow.get("status_format") == "json":
            # StatusCallbackContentType JSON (shared/PROVIDERS.md; not found again in the
            # stored docs, so the endpoint takes form and JSON alike).
            def send() -> int:
                return self._request("POST", url, json_body=body)[0]
        else:
            form = {k: str(v) for k, v in body.items() if k != "Legs"}
            for i, leg in enumerate(legs):
                for key, value in leg.items():
                    form[f"Legs[{i}][{key}]"] = str(value)

            def send() -> int:
                return self._request("POST", url, form=form)[0]
        # "If no 200 response, Exotel retries (up to 2 times)" (developer.exotel.com/docs/
        # advanced-config/webhooks-setup): Sandbox.deliver retries like that.
        for _ in range(self.sb.repeat_callbacks):
            self.sb.deliver(0.01, send)

    def register(self, app: Flask) -> None:
        sb = self.sb

        @app.get("/v1/Accounts/<account>/Calls/<call_sid>.json")
        def exotel_call_details(account: str, call_sid: str) -> Any:
            # developer.exotel.com/docs/voice-v1/api-reference/call-details (details=true).
            # Each hosted account with its own API key and token (basic auth, "<your_api_key>:
            # <your_api_token>" before the host: voice-v1 API overview); another's: 401.
            auth = request.authorization
            key_token = self.accounts().get(account)
            if (key_token is None or auth is None or auth.username != key_token[0]
                    or auth.password != key_token[1]):
                return jsonify({"RestException": {"Status": 401,
                                                  "Message": "Authentication is required"}}), 401
            call = sb.calls.get(call_sid)
            # Another account's call is not found in this one.
            if (call is None or call.provider != "exotel"
                    or (call.account or sb.exotel_account_sid) != account):
                return jsonify({"RestException": {"Status": 404,
                                                  "Message": "Call not found"}}), 404
            legs = self._legs(call)
            leg2 = legs[1] if len(legs) > 1 else None
            return jsonify({"Call": {
                "Sid": call.sid, "ParentCallSid": None, "AccountSid": account,
                "To": national(call.to), "From": national(call.from_),
                "Direction": "inbound", "Status": call.status, "Duration": "0",
                "Details": {
                    "ConversationDuration": leg2["OnCallDuration"] if leg2 else 0,
                    "Leg1Status": "completed" if call.status in _ENDED else "in-progress",
                    "Leg2Status": leg2["Status"] if leg2 else None,
                    "Legs": [{"Leg": {"Id": i + 1, "OnCallDuration": leg["OnCallDuration"]}}
                             for i, leg in enumerate(legs)]}}})

        @app.post("/_sandbox/calls/<sid>/disconnect-ai")
        def exotel_disconnect(sid: str) -> Response:
            self.ai_disconnected(sid)
            return jsonify({"ok": True})

        @app.post("/_sandbox/exotel/calls/<sid>/human-hangup")
        def exotel_human_hangup(sid: str) -> Response:
            call = sb.calls.get(sid)
            if call is not None and call.provider == "exotel":
                self.human_hangs_up(call)
            return jsonify({"ok": True})

        @app.post("/_sandbox/exotel/drop-status-callbacks")
        def exotel_drop() -> Response:
            self.drop_status_callbacks = bool((request.get_json(silent=True) or {}).get("drop"))
            return jsonify({"drop": self.drop_status_callbacks})


Model = ExotelSim


def _demo_flow(public_base_url: str, settings: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """Exotel signs nothing: its URLs carry the secret token; the flow's Connect applet
    asks our dial-up whom to dial."""
    token = settings.get("EXOTEL_WEBHOOK_TOKEN", "")
    return f"&token={token}", {"dial_whom_url": f"{public_base_url}/exotel/dial-up?token={token}"}


# What `warm-transfer demo` plays on Exotel. It reports the outcome when the call ends: the
# demo's customer talks a little, then hangs up.
DEMO = DemoScript(scenarios=(
    (("answer-after:1",), {}, "the human answers; they talk, then hang up"),
    (("busy",), {}, "the human's line is busy"),
), settings=("EXOTEL_WEBHOOK_TOKEN",), call_flow=_demo_flow, talk_seconds=2.0)
