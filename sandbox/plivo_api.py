"""The fake Plivo API: `POST /v1/Account/{auth_id}/Call/{call_uuid}/` (transfer), and the
call side: fetching XML, running Dial / Redirect / Speak / Hangup, and V3-signed callbacks."""

from __future__ import annotations

import contextlib
import time
import uuid
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, jsonify, request
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

if TYPE_CHECKING:
    from sandbox.core import Sandbox, SimCall

_ENDED = ("completed", "busy", "no-answer", "failed", "canceled", "timeout", "cancel")


class PlivoSim:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    # signed requests, as Plivo makes them
    def sign(self, method: str, url: str, params: dict[str, str], nonce: str) -> str:
        base = (construct_post_url(url, dict(params)) if method == "POST"
                else construct_get_url(url, {}))
        return str(get_signature_v3(self.sb.plivo_auth_token.encode(), base.decode(),
                                    nonce.encode()).decode())

    def send(self, url: str, params: dict[str, str], method: str = "POST",
             nonce: str | None = None) -> tuple[int, str]:
        """One callback or XML fetch, signed with X-Plivo-Signature-V3 and a fresh nonce."""
        from sandbox.core import Delivery

        nonce = nonce or uuid.uuid4().hex
        if method == "GET":
            sep = "&" if "?" in url else "?"
            url = url + sep + urlencode(params)
            params = {}
        headers = {"X-Plivo-Signature-V3": self.sign(method, url, params, nonce),
                   "X-Plivo-Signature-V3-Nonce": nonce, "User-Agent": "PlivoHttpClient"}
        status, text = 0, ""
        try:
            resp = self.sb.http.request(method, url, data=params or None, headers=headers,
                                        timeout=10)
            status, text = resp.status_code, resp.text
        except requests.RequestException:
            status = -1
        with self.sb.lock:
            self.sb.deliveries.append(Delivery(url, dict(params), status, time.time()))
        return status, text

    def _callback(self, url: str | None, params: dict[str, str]) -> None:
        if url:
            for _ in range(self.sb.repeat_callbacks):
                self.sb.deliver(0.0, lambda: self.send(url, params)[0])

    def _call_params(self, call: SimCall) -> dict[str, str]:
        return {"CallUUID": call.sid, "From": call.from_, "To": call.to,
                "CallStatus": call.status, "Direction": "inbound",
                "ALegUUID": call.sid, "RequestUUID": call.sid}

    # running XML on a call
    def fetch(self, call: SimCall, url: str, method: str = "POST") -> None:
        status, text = self.send(url, self._call_params(call), method)
        if status != 200:
            call.spoken.append(f"[fetch of {url} failed: {status}]")
            self.sb._end_call(call.sid, "failed")
            return
        self.execute(call, text)

    def execute(self, call: SimCall, xml_text: str) -> None:
        try:
            root = ET.fromstring(xml_text)  # noqa: S314 - XML from the service under test
        except ET.ParseError:
            call.spoken.append("[invalid XML]")
            self.sb._end_call(call.sid, "failed")
            return
        for element in root:
            if call.status in _ENDED:
                return
            if element.tag == "Speak":
                call.spoken.append(element.text or "")
            elif element.tag == "Hangup":
                self.sb._end_call(call.sid, "completed")
                return
            elif element.tag == "Redirect" and element.text:
                call.redirects.append(element.text.strip())
                self.fetch(call, element.text.strip(), element.get("method", "POST"))
                return
            elif element.tag == "Dial":
                self.dial(call, element)
                return

    def dial(self, call: SimCall, element: ET.Element) -> None:
        from sandbox.core import SimCall

        number_el = element.find("Number")
        number = (number_el.text or "").strip() if number_el is not None else ""
        timeout = float(element.get("timeout", "30"))
        with self.sb.lock:
            bleg = SimCall(str(uuid.uuid4()), number, element.get("callerId", call.from_),
                           "ringing", provider="plivo-bleg")
            self.sb.calls[bleg.sid] = bleg
            call.dial = {"action": element.get("action", ""),
                         "callback": element.get("callbackUrl", ""), "bleg": bleg.sid}
            fate = self.sb.fates.get(number, self.sb.default_fate)
        if fate.outcome == "ignore":
            return

        confirm_sound, confirm_key = element.get("confirmSound"), element.get("confirmKey")
        self._hold(call, element.get("dialMusic", ""))

        def outcome() -> None:
            with self.sb.lock:
                if call.status in _ENDED or bleg.status != "ringing":
                    return
                # A voicemail picks up too; it hears the briefing but presses no key.
                picked_up = fate.outcome in ("answer", "decline", "machine") and \
                    fate.ring < timeout
            # With a confirmKey only a human who means it presses (their key must be the one
            # asked for); else picking up is taking the call.
            pressed = self.sb.keys.get(number, "1") if fate.outcome == "answer" else ""
            answered = picked_up and (not confirm_key or pressed == confirm_key)
            if picked_up and confirm_sound:
                # Played to the one who picked up alone, before the bridge.
                code, text = self.send(confirm_sound, {"CallUUID": bleg.sid, "To": number,
                                                       "From": bleg.from_})
                if code == 200:
                    with contextlib.suppress(ET.ParseError):
                        bleg.spoken.extend(e.text or "" for e in ET.fromstring(text)  # noqa: S314
                                           if e.tag == "Speak")
            if answered:
                with self.sb.lock:
                    bleg.status = "in-progress"
                self._callback(call.dial.get("callback") if call.dial else None, {
                    "Event": "DialAnswer", "DialALegUUID": call.sid, "DialBLegUUID": bleg.sid,
                    "DialBLegStatus": "answered", "DialBLegTo": number,
                    "DialBLegFrom": bleg.from_, "CallUUID": call.sid})
                return
            status = {"fail": "failed", "answer": "timeout", "decline": "no-answer",
                      "machine": "no-answer"}.get(fate.outcome, fate.outcome)
            bleg.status = status
            self.dial_over(call, status)

        self.sb.scheduler.at(max(min(fate.ring, timeout), 0.02), outcome)

    def _hold(self, call: SimCall, dial_music: str) -> None:
        """What the caller hears while the Dial rings: "real" is a ringing tone; a URL
        is fetched (signed, like every Plivo request) for Play/Speak/Wait XML."""
        if not dial_music.startswith("http"):
            call.held.append(dial_music or "silence")
            return
        code, text = self.send(dial_music, self._call_params(call))
        try:
            root = ET.fromstring(text) if code == 200 else None  # noqa: S314 - service XML
        except ET.ParseError:
            root = None
        if root is None:
            call.held.append(f"[dialMusic fetch failed: {code}]")
            return
        call.held.extend(f"play {e.text}" if e.tag == "Play" else e.tag for e in root)

    def dial_over(self, call: SimCall, status: str) -> None:
        """Post the Dial action; when the customer is still there, run what it answers."""
        dial = call.dial or {}
        call.dial = None
        action = dial.get("action")
        if not action:
            return
        params = {"DialStatus": status, "DialALegUUID": call.sid,
                  "DialBLegUUID": dial.get("bleg", ""), "CallUUID": call.sid,
                  "DialHangupCause": "NORMAL_CLEARING" if status == "completed" else
                  status.upper().replace("-", "_")}
        for _ in range(self.sb.repeat_callbacks - 1):
            self.send(action, params)
        code, text = self.send(action, params)
        if code != 200:
            # One retry by default ("retry count = 1"), then no XML to run: the call ends.
            # https://www.plivo.com/docs/voice/concepts/callback-configurations/
            code, text = self.send(action, params)
        if call.status not in _ENDED and code == 200:
            self.execute(call, text)
        elif call.status not in _ENDED:
            call.spoken.append(f"[fetch of {action} failed: {code}]")
            self.sb._end_call(call.sid, "completed")

    def ended(self, call: SimCall, status: str) -> None:
        """A customer call (A leg) ended: end its Dial, then its hangup URL."""
        if call.dial:
            bleg = self.sb.calls.get(call.dial.get("bleg", ""))
            if bleg is not None and bleg.status == "in-progress":
                bleg.status = "completed"
                self._callback(call.dial.get("callback"), {
                    "Event": "DialHangup", "DialALegUUID": call.sid, "DialBLegUUID": bleg.sid,
                    "DialBLegStatus": "hangup", "CallUUID": call.sid})
                self.sb.scheduler.at(0, lambda: self.dial_over(call, "completed"))
            elif bleg is not None:
                bleg.status = "canceled"
                call.dial = None
        params = {**self._call_params(call), "CallStatus": status, "Event": "Hangup",
                  "HangupCause": "NORMAL_CLEARING", "Duration": "1", "BillDuration": "60"}
        url = call.status_callback
        if url:
            self.sb.scheduler.at(0.01, lambda: self._callback(url, params))

    def human_hangs_up(self, call: SimCall) -> None:
        """The human ends a bridged call: the Dial is over and its action decides."""
        with self.sb.scheduler.keyed(call.sid):
            self._human_hangs_up(call)

    def _human_hangs_up(self, call: SimCall) -> None:
        dial = call.dial or {}
        bleg = self.sb.calls.get(dial.get("bleg", ""))
        if bleg is None or bleg.status != "in-progress":
            return
        bleg.status = "completed"
        self._callback(dial.get("callback"), {
            "Event": "DialHangup", "DialALegUUID": call.sid, "DialBLegUUID": bleg.sid,
            "DialBLegStatus": "hangup", "CallUUID": call.sid})
        self.dial_over(call, "completed")

    def register(self, app: Flask) -> None:
        sb = self.sb

        def error(status: int, message: str) -> tuple[Response, int]:
            return jsonify({"api_id": str(uuid.uuid4()), "error": message}), status

        @app.post("/v1/Account/<auth_id>/Call/<call_uuid>/")
        def plivo_transfer(auth_id: str, call_uuid: str) -> Any:
            auth = request.authorization
            if (auth_id != sb.plivo_auth_id or auth is None or auth.username != sb.plivo_auth_id
                    or auth.password != sb.plivo_auth_token):
                return error(401, "authentication failed")
            body = request.get_json(silent=True) or {}
            with sb.lock:
                call = sb.calls.get(call_uuid)
                if call is None or call.provider != "plivo" or call.status in _ENDED:
                    return error(404, "call not found")
            if body.get("legs") not in ("aleg", "both") or not body.get("aleg_url"):
                return error(400, "legs and aleg_url are required")
            url, method = str(body["aleg_url"]), str(body.get("aleg_method") or "POST").upper()
            call.dial = None
            sb.scheduler.at(0.01, lambda: self.fetch(call, url, method), key=call.sid)
            return jsonify({"message": "call transferred", "api_id": str(uuid.uuid4())}), 202

        @app.route("/_sandbox/plivo/resume", methods=["GET", "POST"])
        def plivo_resume() -> Response:
            # Stands for the platform's resume URL: the customer is back with the AI.
            return Response('<Response><Wait length="3600"/></Response>',
                            mimetype="application/xml")
