"""The fake Exotel: a flow with a Voicebot applet followed by a Connect applet, the status
callback (form or JSON, with legs), an optional passthru, and the call details API."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, jsonify, request

if TYPE_CHECKING:
    from sandbox.core import Sandbox, SimCall

_ENDED = ("completed", "busy", "no-answer", "failed", "canceled")


class ExotelSim:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        # Exotel says callbacks "may be delayed or fail": drop them to test reconciliation.
        self.drop_status_callbacks = False

    def _request(self, method: str, url: str, params: dict[str, str] | None = None,
                 json_body: Any = None, form: dict[str, str] | None = None
                 ) -> tuple[int, str, str]:
        from sandbox.core import Delivery

        if params:
            url = url + ("&" if "?" in url else "?") + urlencode(params)
        try:
            resp = self.sb.http.request(method, url, json=json_body, data=form, timeout=10,
                                        headers={"User-Agent": "Exotel"})
            result = (resp.status_code, resp.text, resp.headers.get("Content-Type", ""))
        except requests.RequestException:
            result = (-1, "", "")
        with self.sb.lock:
            self.sb.deliveries.append(Delivery(url, dict(form or json_body or {}), result[0],
                                               time.time()))
        return result

    def ai_disconnected(self, sid: str) -> None:
        """The platform closed the Voicebot applet's stream: the flow goes on to Connect."""
        call = self.sb.calls.get(sid)
        if call is None or call.provider != "exotel" or call.status in _ENDED:
            return
        self.sb.scheduler.at(0.01, lambda: self._connect(call), key=call.sid)

    def _connect(self, call: SimCall) -> None:
        url = call.flow.get("dial_whom_url")
        params = {"CallSid": call.sid, "CallFrom": call.from_, "CallTo": call.to,
                  "From": call.from_, "To": call.to, "Direction": "incoming",
                  "DialWhomNumber": "", "CustomField": str(call.flow.get("custom_field", "")),
                  "CurrentTime": time.strftime("%Y-%m-%d %H:%M:%S")}
        if not url:
            return
        head_status, _, head_type = self._request("HEAD", url, params)
        status, text, content_type = self._request("GET", url, params)
        call.flow["dial_up"] = {"head": head_status, "get": status, "type": content_type,
                                "head_type": head_type}
        numbers: list[str] = []
        if status == 200 and "json" in content_type:
            try:
                numbers = [str(n) for n in json.loads(text)["destination"]["numbers"]]
            except (ValueError, KeyError, TypeError):
                numbers = []
        elif status == 200:
            numbers = [n.strip() for n in text.split(",") if n.strip()]
        if not numbers:
            call.flow["leg2"] = ""
            self.sb._end_call(call.sid, "completed")  # Connect had no one to dial
            return
        self._ring(call, numbers)

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
            self._passthru(call)
            self.sb._end_call(call.sid, "completed")  # the flow ends after a failed Connect

        self.sb.scheduler.at(max(fate.ring, 0.02), outcome)

    def _passthru(self, call: SimCall) -> None:
        url = call.flow.get("passthru_url")
        if url:
            self._request("GET", url, {"CallSid": call.sid,
                                       "DialCallStatus": call.flow.get("leg2") or "failed",
                                       "DialCallSid": call.sid + "-2",
                                       "DialWhomNumber": call.flow.get("dialed", "")})

    def _legs(self, call: SimCall) -> list[dict[str, Any]]:
        legs: list[dict[str, Any]] = [{"Status": "completed", "OnCallDuration": 5}]
        if call.flow.get("dialed"):
            answered = call.flow.get("answered_at")
            legs.append({"Status": call.flow.get("leg2", ""),
                         "OnCallDuration": int(time.time() - answered) + 1 if answered else 0})
        return legs

    def human_hangs_up(self, call: SimCall) -> None:
        if call.flow.get("leg2") == "in-progress":
            self.sb.hangup(call.sid)

    def ended(self, call: SimCall, status: str) -> None:
        """The customer's call is over: the human's leg with it, then the callbacks."""
        if call.flow.get("leg2") == "in-progress":
            legs = self._legs(call)
            call.flow["leg2"] = "completed"
            legs[1]["Status"] = "completed"
            self._passthru(call)
        else:
            if call.flow.get("leg2") == "ringing":
                call.flow["leg2"] = "canceled"
            legs = self._legs(call)
        url = call.status_callback
        if not url or self.drop_status_callbacks:
            return
        body: dict[str, Any] = {"CallSid": call.sid, "Status": status,
                                "DateUpdated": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "EventType": "terminal", "RecordingUrl": "", "Legs": legs}
        if call.flow.get("status_format") == "json":
            def send() -> int:
                return self._request("POST", url, json_body=body)[0]
        else:
            form = {k: str(v) for k, v in body.items() if k != "Legs"}
            for i, leg in enumerate(legs):
                for key, value in leg.items():
                    form[f"Legs[{i}][{key}]"] = str(value)

            def send() -> int:
                return self._request("POST", url, form=form)[0]
        for _ in range(self.sb.repeat_callbacks):
            self.sb.deliver(0.01, send)

    def register(self, app: Flask) -> None:
        sb = self.sb

        @app.get("/v1/Accounts/<account>/Calls/<call_sid>.json")
        def exotel_call_details(account: str, call_sid: str) -> Any:
            auth = request.authorization
            if (account != sb.exotel_account_sid or auth is None
                    or auth.username != sb.exotel_api_key
                    or auth.password != sb.exotel_api_token):
                return jsonify({"RestException": {"Status": 401,
                                                  "Message": "Authentication is required"}}), 401
            call = sb.calls.get(call_sid)
            if call is None or call.provider != "exotel":
                return jsonify({"RestException": {"Status": 404,
                                                  "Message": "Call not found"}}), 404
            legs = self._legs(call)
            leg2 = legs[1] if len(legs) > 1 else None
            return jsonify({"Call": {
                "Sid": call.sid, "ParentCallSid": None, "AccountSid": account,
                "To": call.to, "From": call.from_, "Direction": "inbound",
                "Status": call.status, "Duration": "0",
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

        @app.post("/_sandbox/exotel/drop-status-callbacks")
        def exotel_drop() -> Response:
            self.drop_status_callbacks = bool((request.get_json(silent=True) or {}).get("drop"))
            return jsonify({"drop": self.drop_status_callbacks})
