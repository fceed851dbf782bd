"""Twilio: the Conference handoff, human first.

1. Dial the human into conference `transfer-{lead_id}` (Participants API) while the AI
   keeps the customer company.
2. When the human has joined, move the customer's call into the conference with
   `calls(sid).update(twiml=<Dial><Conference>)`; this ends the AI's media stream.
3. Success when the customer has joined. A human who never answers leaves the customer
   with the AI, which simply resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from shared.config import Settings
from shared.store import State
from workers.providers.base import (
    PermanentProviderError,
    ProviderNotConfigured,
    TransientProviderError,
    cached_client,
)

if TYPE_CHECKING:
    from workers.runtime import Runtime

T = TypeVar("T")

AGENT_STATUS_PATH = "/twilio/agent-status"
CONFERENCE_PATH = "/twilio/conference"
WHISPER_PATH = "/twilio/whisper"

# The human's call status -> the failure reason when it ends before joining.
_AGENT_FAILURES = {"busy": "busy", "no-answer": "no_answer", "failed": "failed",
                   "canceled": "failed", "completed": "agent_hung_up"}
_PRE_BRIDGE = (State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED)
_RINGING = {"", "queued", "initiated", "ringing"}


def warm_up() -> None:
    """Load what the SDK loads lazily on first use (~70 ms), before the first transfer."""
    client = Client("AC" + "0" * 32, "warm-up")
    client.conferences("warm-up").participants  # noqa: B018 - the access is the point
    client.calls("warm-up")


def _is_machine(answered_by: str) -> bool:
    return answered_by.startswith("machine") or answered_by == "fax"


def conference_name(transfer: Mapping[str, str]) -> str:
    return f"transfer-{transfer['lead_id']}"


def make_client(settings: Settings, transfer: Mapping[str, str]) -> Client:
    """A Twilio client for this transfer's account (today: the one from the environment)."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        raise ProviderNotConfigured("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set")

    def build() -> Client:
        client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                        http_client=TwilioHttpClient(timeout=settings.provider_http_timeout))
        client.api.base_url = settings.twilio_api_base_url.rstrip("/")
        return client

    return cached_client(("twilio", settings.twilio_account_sid, settings.twilio_auth_token,
                          settings.twilio_api_base_url, str(settings.provider_http_timeout)),
                         build)


def call_api(fn: Callable[[], T]) -> T:
    """Run one Twilio API call, sorting its failures into transient and permanent."""
    try:
        return fn()
    except TwilioRestException as exc:
        cls = TransientProviderError if exc.status >= 500 or exc.status == 429 else \
            PermanentProviderError
        raise cls(f"twilio {exc.status} {exc.code}: {exc.msg}", status=exc.status,
                  code=exc.code if isinstance(exc.code, int) else None) from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientProviderError(f"twilio unreachable: {type(exc).__name__}",
                                     outcome_unknown=not isinstance(exc, requests.ConnectTimeout)
                                     ) from exc


def _callback_url(settings: Settings, path: str, transfer: Mapping[str, str]) -> str:
    return settings.public_url(path) + "?" + urlencode({"transfer_id": transfer["transfer_id"]})


def whisper_twiml(transfer: Mapping[str, str] | None) -> str:
    """The briefing the human hears before the customer joins."""
    response = VoiceResponse()
    if transfer is not None and transfer.get("summary"):
        response.say(f"Incoming transfer. {transfer['summary']}")
    return str(response.to_xml(xml_declaration=False))


def customer_twiml(settings: Settings, transfer: Mapping[str, str]) -> str:
    response = VoiceResponse()
    dial = Dial()
    dial.conference(
        conference_name(transfer),
        start_conference_on_enter=True,
        end_conference_on_exit=True,
        beep=False,
        participant_label="customer",
        status_callback=_callback_url(settings, CONFERENCE_PATH, transfer),
        status_callback_method="POST",
        # One space-separated string: a list would render as "['join', ...]".
        status_callback_event="start end join leave",
    )
    response.append(dial)
    return str(response.to_xml(xml_declaration=False))


class TwilioProvider:
    name = "twilio"

    def start(self, rt: Runtime, transfer: Mapping[str, str]) -> None:
        settings = rt.settings
        client = make_client(settings, transfer)
        tid = transfer["transfer_id"]
        if transfer.get("dial_attempted"):
            # A dial may have been placed by a worker that died before recording it: look
            # before dialing the human a second time.
            existing = transfer.get("agent_call_sid") or self._find_live_dial(client, transfer)
            if existing:
                rt.store.index_call(self.name, existing, tid)
                rt.store.transition(tid, State.DIALING, "found the human's call of an "
                                    "interrupted attempt", from_states=(State.REQUESTED,),
                                    fields={"agent_call_sid": existing})
                return
        rt.store.set_fields(tid, dial_attempted="1")
        try:
            participant = self._dial(client, settings, transfer)
        except (TransientProviderError, PermanentProviderError) as exc:
            if not exc.outcome_unknown:  # Twilio answered: no call was placed
                rt.store.set_fields(tid, dial_attempted="")
            raise
        call_sid = str(participant.call_sid)
        rt.store.index_call(self.name, call_sid, tid)
        rt.store.transition(tid, State.DIALING, "dialing the human agent",
                            from_states=(State.REQUESTED,), fields={"agent_call_sid": call_sid})

    @staticmethod
    def _dial(client: Client, settings: Settings, transfer: Mapping[str, str]) -> Any:
        # Answering-machine detection holds the human's leg until Twilio knows who answered;
        # the answer is in the "answered" status callback (AnsweredBy).
        amd: dict[str, str] = (
            {"machine_detection": "Enable"} if transfer.get("voicemail_detection") else {})
        return call_api(lambda: client.conferences(conference_name(transfer))
                                    .participants.create(
            from_=transfer["outbound_number"],
            to=transfer["transfer_number"],
            label="agent",
            timeout=settings.transfer_ring_timeout,
            early_media=False,
            beep="false",
            start_conference_on_enter=True,
            # The human leaving ends the conference, so nobody waits in an empty room.
            end_conference_on_exit=True,
            status_callback=_callback_url(settings, AGENT_STATUS_PATH, transfer),
            status_callback_method="POST",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            conference_status_callback=_callback_url(settings, CONFERENCE_PATH, transfer),
            conference_status_callback_method="POST",
            conference_status_callback_event=["start", "end", "join", "leave",
                                              "announcement"],
            **amd,
        ))

    @staticmethod
    def _find_live_dial(client: Client, transfer: Mapping[str, str]) -> str | None:
        calls: Any = call_api(lambda: client.calls.list(
            to=transfer["transfer_number"], from_=transfer["outbound_number"], limit=20))
        for call in calls:
            if str(call.status) in ("queued", "initiated", "ringing", "in-progress"):
                return str(call.sid)
        return None

    def handle_callback(self, rt: Runtime, transfer: Mapping[str, str], kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        if kind == "agent-status" and params.get("CallSid") and not transfer.get(
                "agent_call_sid"):
            # The dial's own callback can come before the dialing worker recorded the sid.
            rt.store.set_fields(transfer["transfer_id"], agent_call_sid=params["CallSid"])
            rt.store.index_call(self.name, params["CallSid"], transfer["transfer_id"])
            transfer = {**transfer, "agent_call_sid": params["CallSid"]}
        if kind == "agent-status":
            self._agent_status(rt, transfer, params)
        elif kind == "conference":
            self._conference(rt, transfer, params, task_id)

    def _agent_status(self, rt: Runtime, transfer: Mapping[str, str],
                      params: Mapping[str, str]) -> None:
        status = params.get("CallStatus", "")
        tid = transfer["transfer_id"]
        if status in ("queued", "initiated", "ringing"):
            rt.store.set_fields(tid, agent_status=status)
            rt.store.note(tid, f"human agent {status}")
        elif status == "in-progress":
            answered_by = params.get("AnsweredBy", "")
            rt.store.set_fields(tid, agent_status=status, answered_by=answered_by)
            if _is_machine(answered_by):
                self._voicemail(rt, transfer, answered_by)
                return
            rt.store.transition(tid, State.HUMAN_ANSWERED, "human agent answered",
                                from_states=(State.REQUESTED, State.DIALING))
        elif status in _AGENT_FAILURES:
            rt.store.set_fields(tid, agent_status=status)
            # Before the bridge the customer is still with the AI: it just resumes.
            rt.fail(transfer, _AGENT_FAILURES[status], f"human agent call {status}",
                    from_states=(*_PRE_BRIDGE, State.BRIDGING))

    def _conference(self, rt: Runtime, transfer: Mapping[str, str],
                    params: Mapping[str, str], task_id: str) -> None:
        event = params.get("StatusCallbackEvent", "")
        call_sid = params.get("CallSid", "")
        tid = transfer["transfer_id"]
        is_agent = (bool(call_sid) and call_sid == transfer.get("agent_call_sid", "")) or (
            params.get("ParticipantLabel") == "agent")
        is_customer = bool(call_sid) and call_sid == transfer["call_id"]
        if event == "participant-join" and is_agent:
            answered_by = self._answered_by(rt, transfer, call_sid)
            if _is_machine(answered_by):
                self._voicemail(rt, transfer, answered_by)
                return
            if transfer.get("summary") and self._brief(rt, transfer, call_sid, task_id):
                return  # the bridge follows the briefing's announcement-end
            self._bridge(rt, transfer, task_id)
        elif event in ("announcement-end", "announcement-fail"):
            # The briefing is over (or could not play): now move the customer.
            self._bridge(rt, transfer, task_id)
        elif event == "participant-join" and is_customer:
            rt.succeed(transfer, "customer joined the human agent", from_states=(State.BRIDGING,))
        elif (event == "participant-leave" and is_agent) or event == "conference-end":
            rt.fail(transfer, "agent_hung_up", f"human agent left ({event})",
                    from_states=(*_PRE_BRIDGE, State.BRIDGING))
        else:
            rt.store.note(tid, f"conference {event}")

    def _brief(self, rt: Runtime, transfer: Mapping[str, str], agent_sid: str,
               task_id: str) -> bool:
        """Have Twilio speak the summary to the human alone (an announcement to that
        participant, before the customer is in the conference). True when it was asked."""
        tid = transfer["transfer_id"]
        if not rt.store.claim_for(f"brief:{tid}", task_id):
            return True  # another delivery of this join already asked for it
        rt.store.transition(tid, State.HUMAN_ANSWERED, "human agent joined; briefing them",
                            from_states=(State.REQUESTED, State.DIALING))
        client = make_client(rt.settings, transfer)
        url = _callback_url(rt.settings, WHISPER_PATH, transfer)
        try:
            call_api(lambda: client.conferences(conference_name(transfer))
                     .participants(agent_sid).update(announce_url=url, announce_method="POST"))
        except PermanentProviderError as exc:
            rt.logger(transfer).warning("briefing refused; bridging without it",
                                        extra={"error": str(exc)})
            return False
        return True

    def _answered_by(self, rt: Runtime, transfer: Mapping[str, str], call_sid: str) -> str:
        """Who answered the human's leg, when detection is on: from its status callback,
        or (that callback may come after the join) from Twilio."""
        if not transfer.get("voicemail_detection"):
            return ""
        known = (rt.store.get_transfer(transfer["transfer_id"]) or {}).get("answered_by")
        if known:
            return known
        client = make_client(rt.settings, transfer)
        call: Any = call_api(lambda: client.calls(call_sid).fetch())
        return str(call.answered_by or "")

    def _voicemail(self, rt: Runtime, transfer: Mapping[str, str], answered_by: str) -> None:
        if rt.fail(transfer, "voicemail", f"answering machine ({answered_by}) on the human's "
                   "leg", from_states=_PRE_BRIDGE):
            self.cleanup(rt, {**transfer, "agent_status": "in-progress"})

    def _bridge(self, rt: Runtime, transfer: Mapping[str, str], task_id: str) -> None:
        tid = transfer["transfer_id"]
        moved = rt.store.transition(tid, State.BRIDGING, "human agent joined; moving the customer",
                                    from_states=_PRE_BRIDGE, fields={"bridge_task": task_id})
        if not moved.ok:
            current = rt.store.get_transfer(tid) or {}
            # Only the task that started the bridge (or its retry) may finish it.
            if not (current.get("state") == State.BRIDGING
                    and current.get("bridge_task") == task_id
                    and not current.get("customer_moved")):
                return
        client = make_client(rt.settings, transfer)
        twiml = customer_twiml(rt.settings, transfer)
        try:
            call_api(lambda: client.calls(transfer["call_id"]).update(twiml=twiml))
        except PermanentProviderError as exc:
            # Twilio refuses to redirect a call that is no longer in progress.
            rt.logger(transfer).warning("customer call could not be moved",
                                        extra={"error": str(exc)})
            if rt.fail(transfer, "customer_hung_up", f"customer call not movable: {exc}",
                       from_states=(State.BRIDGING,)):
                self.cleanup(rt, transfer)
            return
        rt.store.set_fields(tid, customer_moved="1")
        rt.store.note(tid, "customer moved into the conference")

    def customer_call_ended(self, rt: Runtime, transfer: Mapping[str, str],
                            params: Mapping[str, str]) -> bool:
        # The AI holds the customer until the bridge, so their hanging up ends the transfer.
        if rt.fail(transfer, "customer_hung_up", "customer hung up before the bridge",
                   from_states=(*_PRE_BRIDGE, State.BRIDGING)):
            self.cleanup(rt, transfer)
        return False

    def reconcile(self, rt: Runtime, transfer: Mapping[str, str]) -> bool:
        return False  # every outcome arrives by callback; none came in time

    def cleanup(self, rt: Runtime, transfer: Mapping[str, str]) -> None:
        current = rt.store.get_transfer(transfer["transfer_id"]) or dict(transfer)
        agent_sid = current.get("agent_call_sid")
        if not agent_sid:
            return
        status = "canceled" if current.get("agent_status", "") in _RINGING else "completed"
        try:
            client = make_client(rt.settings, transfer)
            call_api(lambda: client.calls(agent_sid).update(status=status))
        except (PermanentProviderError, TransientProviderError) as exc:
            rt.logger(transfer).warning("could not hang up the human leg",
                                        extra={"error": str(exc)})
            return
        rt.store.note(transfer["transfer_id"], f"human agent leg {status}")
