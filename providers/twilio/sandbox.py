"""The fake Twilio REST API (2010-04-01): calls, call updates, conference participants."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING
from urllib.parse import unquote

import requests
from flask import Flask, Response, jsonify, request
from twilio.request_validator import RequestValidator

from sandbox.core import DemoScript

if TYPE_CHECKING:
    from sandbox.core import Sandbox, SimCall

_BASE = "/2010-04-01/Accounts/<account>"
_ENDED = ("completed", "busy", "no-answer", "failed", "canceled")


def _conference_of(twiml: str | None) -> str | None:
    if not twiml:
        return None
    try:
        node = ET.fromstring(twiml).find("./Dial/Conference")  # noqa: S314 - our own TwiML
    except ET.ParseError:
        return None
    return node.text.strip() if node is not None and node.text else None


# "The body of the URI element should be a valid SIP URI under 255 characters"
# (docs/voice/api/sip-making-calls); custom headers ride in the URI, "sip:jack@example.com?
# x-myotherheader=bar", several joined by & (docs/voice/api/receiving-sip), named x-...
# and never X-Twilio... (errors/13252, 32113: such a header is dropped).
MAX_SIP_URI = 254


def sip_destination(to: str) -> tuple[str, dict[str, str]] | None:
    """A SIP To: the URI without its headers and the headers Twilio sends in the INVITE;
    None for a phone number."""
    if not to.lower().startswith("sip:"):
        return None
    uri, _, query = to.partition("?")
    headers: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        if name.lower().startswith("x-") and not name.lower().startswith("x-twilio"):
            headers[name] = unquote(value)
    return uri, headers


def register(app: Flask, sb: Sandbox) -> None:
    from sandbox.core import SimCall, SimConference, _sid, _twilio_error

    def authorized(account: str) -> Response | None:
        # HTTP basic auth, AccountSid:AuthToken; else 401 / 20003
        # (https://www.twilio.com/docs/usage/requests-to-twilio).
        # Each hosted account with its own token: another account's token is a 401 too.
        auth = request.authorization
        token = sb.twilio_accounts.get(account)
        if (token is None or auth is None or auth.username != account
                or auth.password != token):
            return _twilio_error(401, 20003, "Authenticate")
        return None

    def owned(call: SimCall | None, account: str) -> bool:
        # A call is a resource of its account: under another's URL it is not found (20404).
        return call is not None and sb.twilio_sid(call) == account

    def call_json(call: SimCall) -> Response:
        # answered_by only once the call has ended: "AMD results will still be available in
        # the /Calls resource once the call is complete" (twilio.com/docs/api/errors/21262).
        ended = call.status in _ENDED
        return jsonify({"sid": call.sid, "account_sid": sb.twilio_sid(call), "to": call.to,
                        "from": call.from_, "status": call.status,
                        "answered_by": (call.answered_by or None) if ended else None,
                        "uri": f"/2010-04-01/Accounts/{sb.twilio_sid(call)}/Calls/"
                               f"{call.sid}.json"})

    # Create addressed by the conference's friendly name, created if new (documented for
    # create only: docs/voice/api/conference-participant-resource#create-a-participant).
    @app.post(f"{_BASE}/Conferences/<name>/Participants.json")
    def create_participant(account: str, name: str) -> Response | tuple[Response, int]:
        if (denied := authorized(account)) is not None:
            return denied
        form = request.form
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to or not from_:
            # https://www.twilio.com/docs/api/errors/21201
            return _twilio_error(400, 21201, "No 'To' or 'From' number is specified")
        sip = sip_destination(to)
        if sip is not None and len(to) > MAX_SIP_URI:
            # The code for an over-long SIP URI is not documented: 21211 (invalid To).
            return _twilio_error(400, 21211, "Invalid 'To' SIP URI")
        to = sip[0] if sip else to
        with sb.lock:
            conf = sb.conferences.get(name)
            if conf is None:
                conf = sb.conferences[name] = SimConference(name, _sid("CF"), account=account)
            # The first participant's conference callback is the conference's
            # (conference_status_callback, SDK participant.py create(): "the conference").
            if form.get("ConferenceStatusCallback") and not conf.status_callback:
                conf.status_callback = form["ConferenceStatusCallback"]
                conf.events = tuple(form.getlist("ConferenceStatusCallbackEvent"))
            call = SimCall(_sid("CA"), to, from_, "queued", form.get("StatusCallback"),
                           tuple(form.getlist("StatusCallbackEvent")), conference=name,
                           label=form.get("Label"), account=account,
                           machine_detection=bool(form.get("MachineDetection")),
                           # Where the participant's AMD verdict goes (participant.py).
                           amd_callback=form.get("AmdStatusCallback"))
            if sip is not None:
                call.flow["sip_headers"] = sip[1]
            sb.calls[call.sid] = call
            fate = sb.fates.get(to, sb.default_fate)
        with sb.scheduler.keyed(name):
            sb._dial(call, fate)
        return jsonify({"account_sid": account, "call_sid": call.sid,
                        "conference_sid": conf.sid, "label": call.label, "status": "queued",
                        "start_conference_on_enter": True, "end_conference_on_exit": True,
                        "hold": False, "muted": False, "coaching": False}), 201

    # Update is addressed by the conference SID: "conference_sid: The SID of the conference
    # with the participant to update" (SDK participant.py, ParticipantContext); a friendly
    # name is documented only for create. Anything else: 404 / 20404.
    @app.post(f"{_BASE}/Conferences/<conference_sid>/Participants/<call_sid>.json")
    def update_participant(account: str, conference_sid: str, call_sid: str) -> Response:
        if (denied := authorized(account)) is not None:
            return denied
        with sb.lock:
            conf = next((c for c in sb.conferences.values() if c.sid == conference_sid), None)
            call = sb.calls.get(call_sid)
            if (conf is None or call is None or call_sid not in conf.participants
                    or not owned(call, account)):
                return _twilio_error(404, 20404, f"The requested resource {request.path} "
                                                 "was not found")
        announce = request.form.get("AnnounceUrl")
        if announce:
            def play() -> None:
                # announce_url: "an announcement to the participant" (participant.py
                # update()), fetched with announce_method; then announcement-end or -fail.
                url, params = announce, {"AccountSid": account,
                                         "CallSid": call.sid, "ConferenceSid": conf.sid}
                status = -1
                try:
                    resp = sb.http.post(url, data=params, timeout=10, headers={
                        "X-Twilio-Signature": sb.twilio_signature(url, params)})
                    status = resp.status_code
                    if status == 200:
                        call.spoken.extend(e.text or "" for e in ET.fromstring(resp.text)  # noqa: S314
                                           if e.tag == "Say")
                except (requests.RequestException, ET.ParseError):
                    status = -1
                sb._conference_event(conf, "announcement-end" if status == 200
                                     else "announcement-fail", call)

            with sb.scheduler.keyed(conf.name):
                sb.scheduler.at(0.05, play)
        return jsonify({"account_sid": account, "call_sid": call.sid,
                        "conference_sid": conf.sid, "label": call.label,
                        "status": call.status})

    # Read calls, filtered by To, From, Status (docs: call-resource#read-multiple-call-resources).
    @app.get(f"{_BASE}/Calls.json")
    def list_calls(account: str) -> Response:
        if (denied := authorized(account)) is not None:
            return denied
        to, from_, status = (request.args.get(k) for k in ("To", "From", "Status"))
        with sb.lock:
            calls = [c for c in sb.calls.values() if c.provider == "twilio"
                     and sb.twilio_sid(c) == account and (not to or c.to == to)
                     and (not from_ or c.from_ == from_)
                     and (not status or c.status == status)]
            body = [{"sid": c.sid, "account_sid": account, "to": c.to,
                     "from": c.from_, "status": c.status} for c in reversed(calls)]
        return jsonify({"calls": body, "next_page_uri": None, "page": 0,
                        "page_size": len(body), "start": 0, "end": max(len(body) - 1, 0),
                        "uri": request.full_path})

    # Create a call with Url or Twiml (docs: call-resource#create-a-call-resource; 21205
    # "Url or Twiml is required").
    @app.post(f"{_BASE}/Calls.json")
    def create_call(account: str) -> Response | tuple[Response, int]:
        if (denied := authorized(account)) is not None:
            return denied
        form = request.form
        if not form.get("To") or not form.get("From"):
            return _twilio_error(400, 21201, "No 'To' or 'From' number is specified")
        sip = sip_destination(form["To"])
        if sip is not None and len(form["To"]) > MAX_SIP_URI:
            return _twilio_error(400, 21211, "Invalid 'To' SIP URI")
        call = SimCall(_sid("CA"), sip[0] if sip else form["To"], form["From"], "queued",
                       form.get("StatusCallback"),
                       tuple(form.getlist("StatusCallbackEvent")) or ("completed",),
                       machine_detection=bool(form.get("MachineDetection")),
                       url=form.get("Url"), twiml=form.get("Twiml"), account=account)
        if not call.url and not form.get("Twiml"):
            return _twilio_error(400, 21205, "Url or Twiml is required")
        if sip is not None:
            call.flow["sip_headers"] = sip[1]
        with sb.lock:
            sb.calls[call.sid] = call
            fate = sb.fates.get(call.to, sb.default_fate)
        with sb.scheduler.keyed(call.sid):
            sb._dial(call, fate)
        return call_json(call), 201

    # Fetch a call; 404 / 20404 when unknown (docs: call-resource#fetch-a-call-resource).
    @app.get(f"{_BASE}/Calls/<call_sid>.json")
    def fetch_call(account: str, call_sid: str) -> Response:
        if (denied := authorized(account)) is not None:
            return denied
        call = sb.calls.get(call_sid)
        if call is None or not owned(call, account):
            return _twilio_error(404, 20404, f"The requested resource {request.path} "
                                             "was not found")
        return call_json(call)

    # Update a call: Status canceled/completed, or new Twiml; 21220 for a call no longer
    # in progress (docs: call-resource#update-a-call-resource, errors/21220).
    @app.post(f"{_BASE}/Calls/<call_sid>.json")
    def update_call(account: str, call_sid: str) -> Response:
        if (denied := authorized(account)) is not None:
            return denied
        with sb.lock, sb.scheduler.keyed(_conference_of(request.form.get("Twiml"))
                                         or sb.call_key(call_sid)):
            call = sb.calls.get(call_sid)
            if call is None or not owned(call, account):
                return _twilio_error(404, 20404, f"The requested resource {request.path} "
                                                 "was not found")
            status = request.form.get("Status")
            twiml = request.form.get("Twiml")
            if status in ("canceled", "completed"):
                if status == "canceled" and call.status not in ("queued", "ringing"):
                    # "canceled" ends only a queued or ringing call (call-resource, Status).
                    return call_json(call)
                sb._end_call(call.sid, "canceled" if call.status in ("queued", "ringing")
                             else "completed")
                return call_json(call)
            if call.status in _ENDED:
                return _twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            if twiml:
                try:
                    root = ET.fromstring(twiml)  # noqa: S314 - TwiML we were sent by our own tests
                except ET.ParseError:
                    # https://www.twilio.com/docs/api/errors/12100
                    return _twilio_error(400, 12100, "Document parse failure")
                sb.join_conference_node(call, root.find("./Dial/Conference"), 0.02)
            return call_json(call)


# What `warm-transfer demo` plays on Twilio.
DEMO = DemoScript(scenarios=(
    (("answer-after:1",), {}, "the human answers"),
    (("busy",), {}, "the human's line is busy"),
    (("decline-after:1", "answer-after:1"), {"screening": True},
     "screening: the first human declines, the second presses 1"),
    (("machine", "answer-after:1"), {"voicemail_detection": True},
     "voicemail on the first line, the second answers"),
    (("sip:answer-after:1",), {}, "a SIP destination gets the summary in its URI headers"),
    (("answer-after:2|answer-after:1",), {},
     "a ring group: both ring at once, the second answers first"),
))


class Model:
    """Twilio in the sandbox: its REST API here; its calls, conferences and TwiML run in the
    shared call engine (sandbox.core), which was written around them."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    def register(self, app: Flask) -> None:
        register(app, self.sb)

    def ended(self, call: SimCall, status: str) -> bool:
        return False  # the shared engine plays Twilio's call and conference events

    def forge(self, method: str, url: str, form: dict[str, str], body: bytes
              ) -> dict[str, str]:
        """Headers signing this request as Twilio does, with a key that is not the account's:
        the bad signature of the conformance suite (tests/conformance)."""
        validator = RequestValidator(self.sb.twilio_auth_token[::-1])
        return {"X-Twilio-Signature": validator.compute_signature(
            url, form if method == "POST" else {})}

    def reset(self) -> None:
        pass

    def new_sid(self) -> str:
        # Call SIDs: "CA" and 32 hex digits (docs/voice/api/call-resource).
        return "CA" + uuid.uuid4().hex

    def second_owner(self) -> str:
        from sandbox.core import TWILIO_SECOND_SID

        return TWILIO_SECOND_SID

    def second_account(self, url: str) -> dict[str, str]:
        """The sandbox's second account, as a CREDENTIALS_FILE entry (account.py's fields)."""
        from sandbox.core import TWILIO_SECOND_SID, TWILIO_SECOND_TOKEN

        return {"account_sid": TWILIO_SECOND_SID, "auth_token": TWILIO_SECOND_TOKEN,
                "api_base_url": url}

    def env(self, url: str) -> dict[str, str]:
        return {"TWILIO_ACCOUNT_SID": self.sb.twilio_account_sid,
                "TWILIO_AUTH_TOKEN": self.sb.twilio_auth_token,
                "TWILIO_API_BASE_URL": url,
                # Empty: the SDK would send a real edge or region to twilio.com, not here
                # (twilio/base/client_base.py reads them with `or`, so "" means none).
                "TWILIO_EDGE": "", "TWILIO_REGION": ""}
