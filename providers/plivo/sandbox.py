"""The fake Plivo API: `POST /v1/Account/{auth_id}/Call/{call_uuid}/` (transfer), and the
call side: fetching XML, running Dial / Redirect / Speak / Hangup, and V3-signed callbacks.

Each behaviour names its source. Docs: plivo.com/docs/voice/xml/dial (Dial), .../xml/request
(the parameters of every request), .../api/call/transfer-a-call (transfer), .../concepts/
signature-validation (V3); SDK: plivo 4.63 (plivo/resources/calls.py, plivo/utils/
signature_v3.py). Where they are silent, the least convenient plausible behaviour, said so.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, jsonify, request
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

from sandbox.core import DemoScript, Fate

if TYPE_CHECKING:
    from collections.abc import Callable

    from sandbox.core import Sandbox, SimCall

_ENDED = ("completed", "busy", "no-answer", "failed", "canceled", "timeout", "cancel")

# How fast <Speak> talks, for how long a confirmSound lasts: 150 words a minute, the usual
# figure for English speech and about the pace of the Amazon Polly voices Plivo's Speak uses
# (plivo.com/docs/voice/concepts/ssml). Faster than the service's own estimate (10
# characters a second), as a real voice would be; the test of that estimate is that a
# human pressing within screening_timeout after the prompt is bridged.
WORDS_PER_SECOND = 150 / 60
# confirmTimeout's default when the Dial gives none: "Defaults to: 120" (xml/dial).
DEFAULT_CONFIRM_TIMEOUT = 120.0
# How long after the prompt has ended a human presses the key, unless set per number.
DEFAULT_PRESS_DELAY = 1.0


def speech_seconds(root: ET.Element | None) -> float:
    """How long a Play/Speak/Wait document takes: Speak at WORDS_PER_SECOND, Wait its
    length (xml/wait: "length ... Defaults to 1"), Play unknown (0)."""
    if root is None:
        return 0.0
    total = 0.0
    for element in root:
        if element.tag == "Speak":
            total += len((element.text or "").split()) / WORDS_PER_SECOND
        elif element.tag == "Wait":
            total += float(element.get("length", "1"))
    return total


# DialStatus -> DialHangupCause as the Q.850 cause names of telephony switches (the docs give
# no table for the Dial action: a plausible one).
_DIAL_HANGUP_CAUSES = {"busy": "USER_BUSY", "no-answer": "NO_ANSWER", "timeout": "NO_ANSWER",
                       "failed": "UNALLOCATED_NUMBER"}

class PlivoSim:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        # Seconds after the screening prompt ends before the human at a number presses.
        self.press_delays: dict[str, float] = {}
        # Conferences by name (members by CallUUID), members that left, the Call API's
        # request_uuid -> CallUUID.
        self.rooms: dict[str, dict[str, Any]] = {}
        self.left: dict[str, dict[str, Any]] = {}
        self.requests_by_uuid: dict[str, str] = {}
        # Tests: a hook run as a transfer of a call is accepted (before the call moves).
        self.on_transfer: Callable[[SimCall], None] | None = None

    def set_press_delay(self, number: str, seconds: float) -> None:
        with self.sb.lock:
            self.press_delays[number] = seconds

    # signed requests, as Plivo makes them: X-Plivo-Signature-V3 over the URL, the nonce and,
    # for POST, the sorted params (SDK plivo/utils/signature_v3.py; concepts/signature-
    # validation)
    def sign(self, method: str, url: str, params: dict[str, str], nonce: str,
             token: str | None = None) -> str:
        base = (construct_post_url(url, dict(params)) if method == "POST"
                else construct_get_url(url, {}))
        return str(get_signature_v3((token or self.sb.plivo_auth_token).encode(),
                                    base.decode(), nonce.encode()).decode())

    def accounts(self) -> dict[str, str]:
        """The hosted accounts, auth id -> auth token: the first and a second one."""
        from sandbox.core import PLIVO_SECOND_ID, PLIVO_SECOND_TOKEN

        return {self.sb.plivo_auth_id: self.sb.plivo_auth_token,
                PLIVO_SECOND_ID: PLIVO_SECOND_TOKEN}

    def owner(self, call: SimCall | None) -> str:
        return (call.account if call is not None else "") or self.sb.plivo_auth_id

    def token_for(self, params: Mapping[str, str]) -> str:
        """The auth token of the account owning the call a request is about: Plivo signs
        with "your Auth Token" (concepts/signature-validation), the account's."""
        for key in ("CallUUID", "DialALegUUID", "ALegUUID"):
            call = self.sb.calls.get(params.get(key, ""))
            if call is not None:
                return self.accounts().get(self.owner(call), self.sb.plivo_auth_token)
        return self.sb.plivo_auth_token

    def send(self, url: str, params: dict[str, str], method: str = "POST",
             nonce: str | None = None) -> tuple[int, str]:
        """One callback or XML fetch, signed with X-Plivo-Signature-V3 and a fresh nonce."""
        from sandbox.core import Delivery

        nonce = nonce or uuid.uuid4().hex
        signed_for = dict(params)
        if method == "GET":
            sep = "&" if "?" in url else "?"
            url = url + sep + urlencode(params)
            params = {}
        # User-Agent as Plivo's requests carry it (seen in integrations; not documented).
        headers = {"X-Plivo-Signature-V3": self.sign(method, url, params, nonce,
                                                     self.token_for(signed_for)),
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
        # Callbacks are retried unless answered 200 ("Callback-retry configurable", xml/dial);
        # deliver() retries 5xx and no answer.
        if url:
            for _ in range(self.sb.repeat_callbacks):
                self.sb.deliver(0.0, lambda: self.send(url, params)[0])

    def _call_params(self, call: SimCall) -> dict[str, str]:
        # The parameters of every XML request (xml/request: CallUUID, From, To, CallStatus,
        # Direction, ALegUUID, ALegRequestUUID).
        return {"CallUUID": call.sid, "From": call.from_, "To": call.to,
                "CallStatus": call.status, "Direction": "inbound",
                "ALegUUID": call.sid, "ALegRequestUUID": call.sid}

    # running XML on a call
    def fetch(self, call: SimCall, url: str, method: str = "POST") -> None:
        status, text = self.send(url, self._call_params(call), method)
        # No XML to run: Plivo ends the call (least convenient; its fallback_url is for
        # answer_url only, api/call/make-a-call).
        if status != 200:
            call.spoken.append(f"[fetch of {url} failed: {status}]")
            self.sb._end_call(call.sid, "failed")
            return
        self.execute(call, text)

    def execute(self, call: SimCall, xml_text: str) -> None:
        try:
            root = ET.fromstring(xml_text)  # noqa: S314 - XML from the service under test
        except ET.ParseError:
            # Invalid XML: the call ends (least convenient; xml/response-format is silent).
            call.spoken.append("[invalid XML]")
            self.sb._end_call(call.sid, "failed")
            return
        self._run(call, list(root))

    def _run(self, call: SimCall, elements: list[ET.Element]) -> None:
        for i, element in enumerate(elements):
            if call.status in _ENDED:
                return
            rest = elements[i + 1:]
            if element.tag == "Wait":  # xml/wait: "length ... Defaults to 1" second
                self.sb.scheduler.at(float(element.get("length", "1")),
                                     lambda rest=rest: self._run(call, rest), key=call.sid)
                return
            if element.tag == "GetDigits":
                self._get_digits(call, element, rest)
                return
            if element.tag == "Conference":
                self._conference(call, element)
                return
            if element.tag == "Speak":  # xml/speak
                call.spoken.append(element.text or "")
            elif element.tag == "Hangup":  # xml/hangup
                self.sb._end_call(call.sid, "completed")
                return
            elif element.tag == "Redirect" and element.text:  # xml/redirect: fetch and run
                call.redirects.append(element.text.strip())
                self.fetch(call, element.text.strip(), element.get("method", "POST"))
                return
            elif element.tag == "Dial":  # xml/dial
                self.dial(call, element)
                return
        if call.flow.get("af_leg") and call.status not in _ENDED:
            # The XML ran out: Plivo hangs the call up (xml/response-format: the call ends
            # when there are no more elements; least convenient for a human's leg).
            self.sb._end_call(call.sid, "completed")

    # --- the Call API's legs (agent first): GetDigits, Conference, machine detection -----

    def _get_digits(self, call: SimCall, element: ET.Element, rest: list[ET.Element]) -> None:
        """xml/getdigits: the nested Speak is played, then the key is awaited; the digits are
        posted to `action` as `Digits`, whose XML is run; none within `timeout` (each of
        `retries` tries) and the call goes on with the next element."""
        call.spoken.extend(e.text or "" for e in element if e.tag == "Speak")
        speech = speech_seconds(element)
        fate = call.flow.get("fate", "answer")
        with self.sb.lock:
            key = self.sb.keys.get(call.to, "1") if fate == "answer" else ""
            delay = self.press_delays.get(call.to, DEFAULT_PRESS_DELAY)
        timeout = float(element.get("timeout", "5"))
        retries = int(element.get("retries", "1"))
        action = element.get("action", "")

        def pressed() -> None:
            if call.status in _ENDED:
                return
            code, text = self.send(action, {**self._call_params(call), "Digits": key})
            if code == 200:
                self.execute(call, text)
            else:  # no XML from the action: the call ends (as any failed fetch)
                self.sb._end_call(call.sid, "completed")

        if key and action and delay < timeout:
            self.sb.scheduler.at(speech + delay, pressed, key=call.sid)
        else:
            # Nothing pressed: after every try's timeout (least convenient: the full time).
            self.sb.scheduler.at(speech + timeout * retries, lambda: self._run(call, rest),
                                 key=call.sid)

    def _conference(self, call: SimCall, element: ET.Element) -> None:
        """xml/conference: the call enters the named room (account-scoped); callbackUrl gets
        ConferenceAction=enter / exit with ConferenceName, ConferenceUUID, ConferenceMemberID,
        CallUUID. endConferenceOnExit: "If a member with this attribute set to true leaves,
        the conference ends"; its members then go on with their `action` (xml/conference:
        "action: URL called when member leaves"), else hang up (no element after it here).
        stayAlone false ("End conference if only one member"): ends it once the member is
        left alone by another's leaving; not on entering alone (the docs do not say:
        least convenient)."""
        name = (element.text or "").strip()
        with self.sb.lock:
            room = self.rooms.setdefault(name, {"uuid": str(uuid.uuid4()), "members": {}})
            member = str(len(room["members"]) + 1)
            room["members"][call.sid] = {
                "callback": element.get("callbackUrl", ""), "member": member,
                "end_on_exit": element.get("endConferenceOnExit") == "true",
                "stay_alone": element.get("stayAlone", "true") != "false",
                "action": element.get("action", ""), "method": element.get("method", "POST")}
            call.conference = f"plivo:{name}"
        self._room_event(name, call, "enter")

    def _room_event(self, name: str, call: SimCall, action: str) -> None:
        room = self.rooms.get(name) or {}
        member = (room.get("members") or {}).get(call.sid) or self.left.get(call.sid, {})
        url = member.get("callback")
        if url:
            params = {"ConferenceAction": action, "ConferenceName": name,
                      "ConferenceUUID": room.get("uuid", ""),
                      "ConferenceMemberID": member.get("member", ""), "CallUUID": call.sid}
            self.sb.scheduler.at(0.01, lambda: self._callback(url, params), key=call.sid)

    def _leave_room(self, call: SimCall) -> None:
        name = (call.conference or "").removeprefix("plivo:")
        room = self.rooms.get(name)
        if room is None or call.sid not in room["members"]:
            return
        member = room["members"].pop(call.sid)
        self.left[call.sid] = member
        self._room_event(name, call, "exit")
        if not room["members"]:
            self.rooms.pop(name, None)  # the last member left: the conference is over
            return
        alone = [m for m in room["members"].values() if not m.get("stay_alone", True)]
        if member["end_on_exit"] or (len(room["members"]) == 1 and alone):
            # The conference ends: every other member leaves it and goes on with its
            # Conference action; without one, with no XML left, its call ends.
            self.rooms.pop(name, None)
            for other in list(room["members"]):
                left = self.left[other] = room["members"][other]
                peer = self.sb.calls.get(other)
                if peer is not None:
                    peer.conference = None
                    self._room_event(name, peer, "exit")
                    if left.get("action"):
                        self.sb.scheduler.at(0.01, lambda peer=peer, left=left: self.fetch(
                            peer, left["action"], left["method"]), key=peer.sid)
                    else:
                        self.sb._end_call(other, "completed")

    def place_leg(self, body: dict[str, Any], account: str = "") -> str:
        """api/call/make-a-call: the leg rings `ring_timeout` seconds; answered, Plivo fetches
        answer_url (POST by default) and runs its XML; its end is posted to hangup_url."""
        from sandbox.core import SimCall

        request_uuid = str(uuid.uuid4())
        number = str(body["to"])
        with self.sb.lock:
            fate = self.sb.fates.get(number, self.sb.default_fate)
            leg = SimCall(str(uuid.uuid4()), number, str(body["from"]), "ringing",
                          str(body.get("hangup_url") or "") or None, ("completed",),
                          provider="plivo", account=account,
                          flow={"af_leg": "1", "request_uuid": request_uuid,
                                "fate": fate.outcome})
            self.sb.calls[leg.sid] = leg
            self.requests_by_uuid[request_uuid] = leg.sid
        timeout = float(body.get("ring_timeout") or 120)  # "Defaults to 120 seconds"
        detect = str(body.get("machine_detection") or "")
        detect_url = str(body.get("machine_detection_url") or "")
        detect_time = float(body.get("machine_detection_time") or 5000) / 1000

        ring_url = str(body.get("ring_url") or "")
        if ring_url and fate.outcome not in ("fail", "ignore"):
            # "ring_url: notified when the call starts ringing" (api/call/make-a-call).
            self.sb.scheduler.at(0.01, lambda: self._callback(ring_url, {
                **self._call_params(leg), "RequestUUID": request_uuid,
                "Direction": "outbound", "CallStatus": "ringing", "Event": "Ring"}),
                key=leg.sid)

        def outcome() -> None:
            if leg.status != "ringing":
                return
            if fate.outcome == "ignore":
                return
            if fate.outcome not in ("answer", "decline", "machine") or fate.ring >= timeout:
                status = {"fail": "failed", "busy": "busy"}.get(fate.outcome, "no-answer")
                self.sb._end_call(leg.sid, status)
                return
            leg.status = "in-progress"
            if fate.outcome == "machine" and detect in ("true", "hangup"):
                # The verdict only at the end of machine_detection_time (least convenient),
                # posted to machine_detection_url (api/call/asynchronous-machine-detection).
                def verdict() -> None:
                    if leg.status in _ENDED:
                        return
                    if detect_url:
                        self._callback(detect_url, {
                            **self._call_params(leg), "Machine": "true",
                            "IfMachine": "hangup" if detect == "hangup" else "continue",
                            "Event": "MachineDetection", "RequestUUID": request_uuid,
                            "Direction": "outbound", "CallStatus": "in-progress"})
                    if detect == "hangup":
                        self.sb._end_call(leg.sid, "completed")
                self.sb.scheduler.at(detect_time, verdict, key=leg.sid)
            self.fetch(leg, str(body["answer_url"]), str(body.get("answer_method") or "POST"))

        self.sb.scheduler.at(max(min(fate.ring, timeout), 0.02), outcome, key=leg.sid)
        return request_uuid

    def dial(self, call: SimCall, element: ET.Element) -> None:
        from sandbox.core import SimCall

        # Several Numbers (or Users) in one Dial ring at once: "The first call to pick up is
        # connected to the current call and the rest are hung up" (xml/dial/number, and
        # xml/dial/user for SIP endpoints).
        targets = [el for el in element if el.tag in ("Number", "User")]
        # timeout: "the amount of time ... the called party has to answer" (xml/dial).
        timeout = float(element.get("timeout", "30"))
        legs: list[tuple[SimCall, Fate]] = []
        with self.sb.lock:
            for target in targets:
                to = (target.text or "").strip()
                leg = SimCall(str(uuid.uuid4()), to, element.get("callerId", call.from_),
                              "ringing", provider="plivo-bleg", account=call.account)
                if target.tag == "User":
                    # "You can use the User element to specify a SIP endpoint (user) to
                    # dial" (xml/dial/user).
                    leg.flow["sip_headers"] = _sip_headers(target.get("sipHeaders", ""))
                self.sb.calls[leg.sid] = leg
                legs.append((leg, self.sb.fates.get(to, self.sb.default_fate)))
            if not legs:
                return
            bleg, fate = _first_to_pick_up(legs, timeout)
            number = bleg.to
            others = [leg for leg, _ in legs if leg is not bleg]
            call.dial = {"action": element.get("action", ""),
                         "callback": element.get("callbackUrl", ""), "bleg": bleg.sid}
        if fate.outcome == "ignore":
            return

        confirm_sound, confirm_key = element.get("confirmSound"), element.get("confirmKey")
        # confirmTimeout: "Timeout starts after the call is answered" (xml/dial).
        confirm_timeout = float(element.get("confirmTimeout") or DEFAULT_CONFIRM_TIMEOUT)
        self._hold(call, element.get("dialMusic", ""))

        def outcome() -> None:
            with self.sb.lock:
                if call.status in _ENDED or bleg.status != "ringing":
                    return
                # A voicemail picks up too; it hears the briefing but presses no key.
                picked_up = fate.outcome in ("answer", "decline", "machine") and \
                    fate.ring < timeout
            if not picked_up:
                # Not answered within timeout: DialStatus no-answer / busy / failed (xml/dial,
                # "Parameters sent to action URL").
                status = {"fail": "failed", "answer": "no-answer", "decline": "no-answer",
                          "machine": "no-answer"}.get(fate.outcome, fate.outcome)
                bleg.status = status
                for other in others:
                    if other.status == "ringing":
                        other.status = "no-answer"
                self.dial_over(call, status)
                return
            answered_at = time.monotonic()
            with self.sb.lock:
                bleg.status = "in-progress"
                for other in others:  # "the rest are hung up"
                    if other.status == "ringing":
                        other.status = "canceled"
            # The Dial's callbackUrl on the answer. Whether Plivo sends it when the human picks
            # up or once they have pressed confirmKey, the docs do not say: least convenient,
            # at pick-up, before the key. Its name: DialAction=answer (Plivo-compatible
            # eqivo; integrations); xml/dial's table was not readable here.
            self._callback(call.dial.get("callback") if call.dial else None, {
                "DialAction": "answer", "DialALegUUID": call.sid, "DialBLegUUID": bleg.sid,
                "DialBLegStatus": "answer", "DialBLegTo": number, "DialBLegFrom": bleg.from_,
                "CallUUID": call.sid})
            speech = 0.0
            if confirm_sound:
                # "A remote URL fetched with a POST HTTP request that must return an XML
                # response with Play, Wait, and/or Speak elements only ... played to the
                # called party when the call is answered" (xml/dial).
                code, text = self.send(confirm_sound, {"CallUUID": bleg.sid, "To": number,
                                                       "From": bleg.from_})
                root = None
                if code == 200:
                    with contextlib.suppress(ET.ParseError):
                        root = ET.fromstring(text)  # noqa: S314 - the service's XML
                if root is not None:
                    bleg.spoken.extend(e.text or "" for e in root if e.tag == "Speak")
                speech = speech_seconds(root)
            if not confirm_key:
                return  # picked up is taken: bridged once the confirmSound has played
            # "confirmKey: the digit to be pressed by the called party to accept the call"
            # (xml/dial): only a human who means it presses, and it must be that key.
            with self.sb.lock:
                pressed = self.sb.keys.get(number, "1") if fate.outcome == "answer" else ""
                delay = self.press_delays.get(number, DEFAULT_PRESS_DELAY)
            press_at = speech + delay  # seconds after the answer
            elapsed = time.monotonic() - answered_at
            if pressed == confirm_key and press_at < confirm_timeout:
                self.sb.scheduler.at(max(press_at - elapsed, 0.0), lambda: bridge())
            else:
                self.sb.scheduler.at(max(confirm_timeout - elapsed, 0.0), lambda: drop())

        def bridge() -> None:
            # The key accepts the call: the legs are bridged (xml/dial, confirmKey). Plivo
            # reports nothing for it that the docs name; nothing is sent.
            with self.sb.lock:
                if call.dial is not None and bleg.status == "in-progress":
                    call.dial["bridged"] = "1"

        def drop() -> None:
            # No key within confirmTimeout: the human's leg is hung up and the Dial ends.
            # Its DialStatus is not documented for this case; least convenient: "completed"
            # (the leg was answered), the value a bridged call's end also gets.
            with self.sb.lock:
                if call.status in _ENDED or bleg.status != "in-progress":
                    return
                bleg.status = "completed"
            self._callback(call.dial.get("callback") if call.dial else None, {
                "DialAction": "hangup", "DialALegUUID": call.sid, "DialBLegUUID": bleg.sid,
                "DialBLegStatus": "hangup", "DialBLegHangupCause": "NORMAL_CLEARING",
                "CallUUID": call.sid})
            self.dial_over(call, "completed")

        self.sb.scheduler.at(max(min(fate.ring, timeout), 0.02), outcome)

    def _hold(self, call: SimCall, dial_music: str) -> None:
        """What the caller hears while the Dial rings (dialMusic: "Music to be played to the
        caller while the call is being connected ... real" plays a ringing tone, a URL must
        return Play/Speak/Wait XML, xml/dial); fetched signed, like every Plivo request."""
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
        """Post the Dial action; when the customer is still there, run what it answers
        ("Upon completion of the call, Plivo makes a GET or POST request to the action URL
        ... the call flow will continue using the XML received", xml/dial). Parameters:
        DialStatus, DialALegUUID, DialBLegUUID, DialHangupCause, DialRingStatus
        (use-cases/dial-status-reporting)."""
        dial = call.dial or {}
        call.dial = None
        action = dial.get("action")
        if not action:
            return
        params = {"DialStatus": status, "DialALegUUID": call.sid,
                  "DialBLegUUID": dial.get("bleg", ""), "CallUUID": call.sid,
                  "DialRingStatus": "true" if status != "failed" else "false",
                  # "the standard telephony hangup cause" (dial-status-reporting): Q.850 names.
                  "DialHangupCause": _DIAL_HANGUP_CAUSES.get(status, "NORMAL_CLEARING")}
        for _ in range(self.sb.repeat_callbacks - 1):
            self.send(action, params)
        code, text = self.send(action, params)
        # No XML from the action (an error or a 503): the call ends, as with any failed
        # fetch (least convenient: the docs do not promise a retry of an action URL).
        if call.status not in _ENDED and code == 200:
            self.execute(call, text)
        elif call.status not in _ENDED:
            call.spoken.append(f"[fetch of {action} failed: {code}]")
            self.sb._end_call(call.sid, "completed")

    def forge(self, method: str, url: str, form: dict[str, str], body: bytes
              ) -> dict[str, str]:
        """Headers signing this request as Plivo does, with a key that is not the account's:
        the bad signature of the conformance suite (tests/conformance)."""
        nonce = uuid.uuid4().hex
        base = (construct_post_url(url, dict(form)) if method == "POST"
                else construct_get_url(url, {}))
        wrong = self.sb.plivo_auth_token[::-1].encode()
        return {"X-Plivo-Signature-V3": str(get_signature_v3(wrong, base.decode(),
                                                             nonce.encode()).decode()),
                "X-Plivo-Signature-V3-Nonce": nonce}

    def reset(self) -> None:
        self.press_delays.clear()
        self.rooms.clear()
        self.left.clear()
        self.requests_by_uuid.clear()
        self.on_transfer = None

    def new_sid(self) -> str:
        # CallUUIDs are UUIDs (api/call: "call_uuid").
        return str(uuid.uuid4())

    def second_owner(self) -> str:
        from sandbox.core import PLIVO_SECOND_ID

        return PLIVO_SECOND_ID

    def second_account(self, url: str) -> dict[str, str]:
        """The sandbox's second account, as a CREDENTIALS_FILE entry (account.py's fields)."""
        from sandbox.core import PLIVO_SECOND_ID, PLIVO_SECOND_TOKEN

        return {"auth_id": PLIVO_SECOND_ID, "auth_token": PLIVO_SECOND_TOKEN,
                "api_base_url": url}

    def env(self, url: str) -> dict[str, str]:
        return {"PLIVO_AUTH_ID": self.sb.plivo_auth_id,
                "PLIVO_AUTH_TOKEN": self.sb.plivo_auth_token,
                "PLIVO_API_BASE_URL": url,
                "PLIVO_RESUME_URL": f"{url}/_sandbox/plivo/resume"}

    def ended(self, call: SimCall, status: str) -> bool:
        self._ended(call, status)
        return True

    def _ended(self, call: SimCall, status: str) -> None:
        """A customer call (A leg) ended: end its Dial, then its hangup URL (hangup_url:
        "notified when the call is hung up", api/call/make-a-call; parameters xml/request)."""
        if call.dial:
            bleg = self.sb.calls.get(call.dial.get("bleg", ""))
            if bleg is not None and bleg.status == "in-progress":
                bleg.status = "completed"
                self._callback(call.dial.get("callback"), {
                    "DialAction": "hangup", "DialALegUUID": call.sid,
                    "DialBLegUUID": bleg.sid, "DialBLegStatus": "hangup", "CallUUID": call.sid})
                self.sb.scheduler.at(0, lambda: self.dial_over(call, "completed"))
            elif bleg is not None:
                bleg.status = "canceled"
                call.dial = None
        self._leave_room(call)
        # (Event=Hangup: seen in integrations, not in xml/request; the service ignores it.)
        params = {**self._call_params(call), "CallStatus": status, "Event": "Hangup",
                  "HangupCause": "NORMAL_CLEARING", "Duration": "1", "BillDuration": "60"}
        if call.flow.get("request_uuid"):
            params.update(RequestUUID=call.flow["request_uuid"], Direction="outbound")
        url = call.status_callback
        if url:
            self.sb.scheduler.at(0.01, lambda: self._callback(url, params))

    def human_hangs_up(self, call: SimCall) -> None:
        """The human ends a bridged call: the Dial is over and its action decides (the
        callbackUrl's hangup event, then the action with DialStatus completed, xml/dial)."""
        with self.sb.scheduler.keyed(call.sid):
            self._human_hangs_up(call)

    def _human_hangs_up(self, call: SimCall) -> None:
        dial = call.dial or {}
        bleg = self.sb.calls.get(dial.get("bleg", ""))
        if bleg is None or bleg.status != "in-progress":
            return
        bleg.status = "completed"
        self._callback(dial.get("callback"), {
            "DialAction": "hangup", "DialALegUUID": call.sid, "DialBLegUUID": bleg.sid,
            "DialBLegStatus": "hangup", "CallUUID": call.sid})
        self.dial_over(call, "completed")

    def register(self, app: Flask) -> None:
        sb = self.sb

        def error(status: int, message: str) -> tuple[Response, int]:
            return jsonify({"api_id": str(uuid.uuid4()), "error": message}), status

        # Transfer a call: POST /v1/Account/{auth_id}/Call/{call_uuid}/, basic auth, JSON
        # {legs, aleg_url, aleg_method}, 202 "call transferred" (api/call/transfer-a-call;
        # SDK plivo/resources/calls.py Calls.transfer).
        @app.post("/v1/Account/<auth_id>/Call/<call_uuid>/")
        def plivo_transfer(auth_id: str, call_uuid: str) -> Any:
            if not authorised(auth_id):
                return error(401, "authentication failed")
            body = request.get_json(silent=True) or {}
            with sb.lock:
                call = sb.calls.get(call_uuid)
                # Another account's call is not found in this one.
                if (call is None or call.provider != "plivo" or call.status in _ENDED
                        or self.owner(call) != auth_id):
                    return error(404, "call not found")
            # "legs ... aleg, bleg or both"; aleg_url "required if legs is aleg or both".
            if body.get("legs") not in ("aleg", "both") or not body.get("aleg_url"):
                return error(400, "legs and aleg_url are required")
            # aleg_method defaults to POST (transfer-a-call).
            url, method = str(body["aleg_url"]), str(body.get("aleg_method") or "POST").upper()
            # The call leaves the XML it was running (the AI's stream, or a Conference) for
            # aleg_url's.
            if self.on_transfer is not None:
                self.on_transfer(call)
            call.dial = None
            self._leave_room(call)
            sb.scheduler.at(0.01, lambda: self.fetch(call, url, method), key=call.sid)
            return jsonify({"message": "call transferred", "api_id": str(uuid.uuid4())}), 202

        def authorised(auth_id: str) -> bool:
            auth = request.authorization
            # Each hosted account with its own token; another's is a 401 (api/overview:
            # "HTTP Basic Auth ... AUTH ID as username and AUTH TOKEN as password").
            token = self.accounts().get(auth_id)
            return (token is not None and auth is not None and auth.username == auth_id
                    and auth.password == token)

        # Make a call: POST /v1/Account/{auth_id}/Call/, JSON {from, to, answer_url, ...},
        # 201 {"message": "call fired", "request_uuid"} (api/call/make-a-call; SDK
        # plivo/resources/calls.py Calls.create).
        @app.post("/v1/Account/<auth_id>/Call/")
        def plivo_make_call(auth_id: str) -> Any:
            if not authorised(auth_id):
                return error(401, "authentication failed")
            body = request.get_json(silent=True) or {}
            if not (body.get("from") and body.get("to") and body.get("answer_url")):
                return error(400, "from, to and answer_url are required")
            request_uuid = self.place_leg(body, auth_id)
            return jsonify({"message": "call fired", "request_uuid": request_uuid,
                            "api_id": str(uuid.uuid4())}), 201

        # Hang up a call: DELETE /v1/Account/{auth_id}/Call/{call_uuid}/, 204 (api/call/
        # hangup-a-call; SDK Calls.delete); an ended or unknown call is 404.
        @app.delete("/v1/Account/<auth_id>/Call/<call_uuid>/")
        def plivo_hangup(auth_id: str, call_uuid: str) -> Any:
            if not authorised(auth_id):
                return error(401, "authentication failed")
            with sb.lock:
                call = sb.calls.get(call_uuid)
                if call is None or call.status in _ENDED:
                    return error(404, "call not found")
            sb.scheduler.at(0.01, lambda: sb._end_call(call_uuid, "completed"), key=call_uuid)
            return Response(status=204)

        # Cancel a call request: DELETE /v1/Account/{auth_id}/Request/{request_uuid}/, 204;
        # only while it rings (SDK Calls.cancel; an answered call is hung up by its uuid).
        @app.delete("/v1/Account/<auth_id>/Request/<request_uuid>/")
        def plivo_cancel(auth_id: str, request_uuid: str) -> Any:
            if not authorised(auth_id):
                return error(401, "authentication failed")
            with sb.lock:
                call = sb.calls.get(self.requests_by_uuid.get(request_uuid, ""))
                if call is None or call.status != "ringing":
                    return error(404, "request not found")
            sb.scheduler.at(0.01, lambda: sb._end_call(call.sid, "cancel"), key=call.sid)
            return Response(status=204)

        # Not Plivo: the platform's resume URL, for tests.
        @app.route("/_sandbox/plivo/resume", methods=["GET", "POST"])
        def plivo_resume() -> Response:
            # Stands for the platform's resume URL: the customer is back with the AI.
            return Response('<Response><Wait length="3600"/></Response>',
                            mimetype="application/xml")


Model = PlivoSim

# What `warm-transfer demo` plays on Plivo.
DEMO = DemoScript(scenarios=(
    (("answer-after:1",), {}, "the human answers"),
    (("no-answer:2",), {}, "nobody answers; the customer goes back to the AI"),
    (("busy", "answer-after:1"), {}, "the first line is busy, the second answers"),
    (("busy", "answer-after:1"), {"handoff": "agent_first", "screening": True},
     "agent first: busy, then the second is briefed, presses 1, the customer joins"),
    (("answer-after:2|answer-after:1",), {},
     "a ring group: both ring at once, the second answers first"),
    (("sip:answer-after:1",), {}, "a SIP destination gets the context in X-PH- headers"),
))


def _sip_headers(value: str) -> dict[str, str]:
    """What a SIP endpoint receives from <User sipHeaders>: "head1=val1,head2=val2 ...
    always prefixed with X-PH-"; names letters and digits, values letters, digits and %
    (guides/pass-custom-headers). Anything else is not sent (least convenient: dropped)."""
    from urllib.parse import unquote

    out: dict[str, str] = {}
    for item in filter(None, value.split(",")):
        name, _, raw = item.partition("=")
        if name.isascii() and name.isalnum() and all(
                c.isascii() and (c.isalnum() or c == "%") for c in raw):
            out[f"X-PH-{name}"] = unquote(raw)
    return out


def _first_to_pick_up(legs: list[tuple[SimCall, Fate]], timeout: float
                      ) -> tuple[SimCall, Fate]:
    """Of a Dial's legs rung at once, the one whose outcome decides the Dial: the first to
    pick up (a voicemail picks up too), else the one that rang out, else a busy one. How
    Plivo reports a group none of which answered is not documented: least convenient, the
    outcome of whichever leg ended last."""
    picking = [(fate.ring, i) for i, (_, fate) in enumerate(legs)
               if fate.outcome in ("answer", "decline", "machine") and fate.ring < timeout]
    if picking:
        return legs[min(picking)[1]]
    if len(legs) == 1:
        return legs[0]
    last = max(range(len(legs)), key=lambda i: min(legs[i][1].ring, timeout))
    return legs[last]
