"""Twilio: the Conference handoff, human first.

1. Dial the human into conference `transfer-{lead_id}` (Participants API) while the AI
   keeps the customer company.
2. When the human has joined, move the customer's call into the conference with
   `calls(sid).update(twiml=<Dial><Conference>)`; this ends the AI's media stream.
3. Success when the customer has joined. A human who never answers leaves the customer
   with the AI, which simply resumes.

Fallback destinations: a human leg that ends unreached (busy, no answer, voicemail,
declined) is followed by a leg to the next number while the customer stays with the AI.
Each leg's callbacks carry its attempt number, so those of a leg left behind are ignored;
conference events are told apart by CallSid and ConferenceSid.

Screening: the human's leg is placed with calls.create and our TwiML (/twilio/screen): a
<Gather> speaks the briefing and waits for the key; pressing it answers with the
<Dial><Conference> that joins them, anything else is `declined`.

Briefing: an announcement to the human's participant, addressed by the ConferenceSid of
their join callback (the participant UPDATE takes the SID, not the friendly name).
Voicemail detection: the verdict comes to AmdStatusCallback (/twilio/amd), before or after
the join; the customer moves only once both are in and the verdict is a person. With
screening, detection is synchronous and the verdict arrives with the /twilio/screen request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from providers.base import (
    NETWORK_ERRORS,
    PermanentProviderError,
    TransientProviderError,
    account_for,
    cached_client,
    callback_url,
    claim_bridge,
    extension,
    group_legs,
    next_to_place,
    place_group,
    place_leg,
    sort_http_failure,
    unreachable,
)
from providers.twilio import callbacks
from providers.twilio.account import TwilioAccount
from providers.twilio.callbacks import PRE_BRIDGE, RINGING
from providers.twilio.markup import (
    AGENT_STATUS_PATH,
    AMD_PATH,
    CONFERENCE_PATH,
    MEMBER_PATH,
    SCREEN_PATH,
    WHISPER_PATH,
    agent_join_twiml,
    agent_label,
    conference_name,
    customer_twiml,
    screen_query,
    sip_to,
)
from shared.config import Settings
from shared.contracts import GROUP_SEPARATOR
from shared.http import settle_environment
from shared.model import CallbackKind, Transfer
from shared.phone import is_sip
from shared.store import State, ring_timeout

if TYPE_CHECKING:
    from workers.runtime import Runtime

T = TypeVar("T")

# Twilio's REST refusals of a caller ID it will not present (21210: not a Twilio or verified
# number; 21212: invalid). 13214 is a <Dial> callerId warning, never a REST answer.
_CALLER_ID_REFUSED = frozenset({21210, 21212})
# Only the callbacks the state machine acts on (each one not asked for saves a request, a
# signature check and often a task). The leg: `answered` (human_answered, and cleanup's
# `completed` rather than `canceled` for an answered leg) and `completed` (busy, no-answer,
# failed and canceled come as `completed`); `initiated` and `ringing` changed nothing. The
# conference: `join` (the human's join bridges, the customer's is the success) and
# `announcement` (the briefing's end); `leave` and `end` only repeated what the human
# leg's `completed` says, and `start` was only noted. Values and names: SDK
# rest/api/v2010/account/conference/participant.py, create(); `status_callback_event`
# "Can be: initiated, ringing, answered, and completed", `conference_status_callback_event`
# "Can be: start, end, join, leave, mute, hold, modify, speaker, and announcement".
AGENT_LEG_EVENTS = ["answered", "completed"]
CONFERENCE_EVENTS = ["join", "announcement"]
# The callbacks our routes hand to the worker.
CALLBACK_KINDS = frozenset({CallbackKind.AGENT_STATUS, CallbackKind.CONFERENCE,
                            CallbackKind.AMD, CallbackKind.SCREEN})


def _url(settings: Settings, path: str, transfer: Transfer,
         attempt: str | None = None, extra: Mapping[str, str] | None = None) -> str:
    return callback_url(settings, path, transfer.transfer_id, attempt, extra,
                        account=transfer.account)


def warm_up() -> None:
    """Load what the SDK loads lazily on first use (~70 ms), before the first transfer."""
    client = Client("AC" + "0" * 32, "warm-up")
    client.conferences("warm-up").participants  # noqa: B018 - the access is the point
    client.calls("warm-up")


def account_of(settings: Settings, transfer: Transfer) -> TwilioAccount:
    """The credentials of the transfer's account (ProviderNotConfigured when it has none)."""
    return account_for(settings, "twilio", transfer, TwilioAccount,
                       "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")


def make_client(settings: Settings, transfer: Transfer) -> Client:
    """A Twilio client authenticated as the transfer's account."""
    account = account_of(settings, transfer)
    sid, token = account.account_sid, account.secret("auth_token")

    def build() -> Client:
        http = TwilioHttpClient(timeout=settings.provider_http_timeout)
        if http.session is not None:
            settle_environment(http.session, account.api_base_url)
        client = Client(sid, token, http_client=http)
        client.api.base_url = account.api_base_url.rstrip("/")
        return client

    return cached_client(("twilio", sid, token, account.api_base_url,
                          str(settings.provider_http_timeout)), build)


def sip_auth(settings: Settings, transfer: Transfer) -> dict[str, str]:
    """The credentials Twilio answers a SIP destination's digest challenge with
    (`sip_auth_username`/`sip_auth_password` on calls and participants): the transfer's
    account's, from the credential source, never from the request."""
    account = account_of(settings, transfer)
    user = account.secret("sip_auth_username")
    password = account.secret("sip_auth_password")
    return {"sip_auth_username": user, "sip_auth_password": password} \
        if user and password else {}


def call_api(fn: Callable[[], T]) -> T:
    """Run one Twilio API call, sorting its failures into transient and permanent."""
    try:
        return fn()
    except TwilioRestException as exc:
        raise sort_http_failure("twilio", exc.status, str(exc.msg),
                                code=exc.code if isinstance(exc.code, int) else None) from exc
    except NETWORK_ERRORS as exc:
        raise unreachable("twilio", exc) from exc


class TwilioProvider:
    name = "twilio"

    def start(self, rt: Runtime, transfer: Transfer) -> None:
        self._place(rt, transfer, "0", transfer.transfer_number)

    def _place(self, rt: Runtime, transfer: Transfer, attempt: str,
               number: str) -> None:
        """Dial the human leg of `attempt` (once: a retry looks for the leg first)."""
        if GROUP_SEPARATOR in number:
            self._place_group(rt, transfer, attempt, number.split(GROUP_SEPARATOR))
            return
        client = make_client(rt.settings, transfer)
        note = "dialing the human agent" if attempt == "0" else \
            f"dialing destination {int(attempt) + 1}"
        place_leg(rt, transfer, attempt, provider=self.name, pre_bridge=PRE_BRIDGE, note=note,
                  # A leg of an interrupted attempt: recorded, or live to that number.
                  find=lambda: transfer.agent_call_sid or self._find_live_dial(
                      client, transfer, number),
                  dial=lambda: {"agent_call_sid": self._dial(rt, client, transfer, attempt,
                                                             number)})

    def _dial(self, rt: Runtime, client: Client, transfer: Transfer, attempt: str,
              number: str) -> str:
        """Place the leg; the template's caller ID when Twilio accepts it, else ours."""
        caller = transfer.caller_number or transfer.outbound_number
        try:
            return self._create_leg(rt.settings, client, transfer, attempt, number, caller)
        except PermanentProviderError as exc:
            if caller == transfer.outbound_number or exc.code not in _CALLER_ID_REFUSED:
                raise
        # Twilio presents only its own or verified numbers as caller ID.
        rt.store.note(transfer.transfer_id, "Twilio refused the customer's number as "
                      "caller ID; dialing with the lead's outbound number")
        return self._create_leg(rt.settings, client, transfer, attempt, number,
                                transfer.outbound_number)

    @staticmethod
    def _create_leg(settings: Settings, client: Client, transfer: Transfer,
                    attempt: str, number: str, caller: str) -> str:
        status = {"status_callback": _url(settings, AGENT_STATUS_PATH, transfer,
                                                   attempt),
                  "status_callback_method": "POST",
                  "status_callback_event": AGENT_LEG_EVENTS}
        detect = transfer.voicemail_detection
        if is_sip(number):
            # Participants and calls take a SIP URI in To, with its credentials (SDK
            # participant.py and call/__init__.py, sip_auth_username/_password).
            status = {**status, **sip_auth(settings, transfer)}
            number = sip_to(transfer, number)
        if transfer.screening:
            # Our TwiML runs on the human's leg first: the key decides whether they join.
            # Synchronous detection (no AsyncAmd): Twilio fetches the Url only once it knows
            # who answered, with AnsweredBy in that request (see /twilio/screen).
            call: Any = call_api(lambda: client.calls.create(
                to=number, from_=caller, timeout=ring_timeout(settings, transfer, attempt),
                url=_url(settings, SCREEN_PATH, transfer, attempt,
                                  screen_query(transfer, attempt)), method="POST",
                **status, **({"machine_detection": "Enable"} if detect else {})))
            return str(call.sid)
        digits = extension(transfer, attempt)
        if digits:
            # Participants create has no SendDigits (SDK participant.py): the leg is a call
            # whose TwiML plays the digits, then joins the conference. Not calls.create's
            # send_digits: the docs do not order it before the TwiML, so the briefing could
            # start first. (Detection is refused with an extension, see contracts.)
            call = call_api(lambda: client.calls.create(
                to=number, from_=caller, timeout=ring_timeout(settings, transfer, attempt),
                twiml=agent_join_twiml(settings, transfer, attempt, digits), **status))
            return str(call.sid)
        # A participant's detection result goes only to AmdStatusCallback (without one,
        # Twilio warns 21262 and the result is on the Call only once it has ended).
        amd: dict[str, str] = {
            "machine_detection": "Enable",
            "amd_status_callback": _url(settings, AMD_PATH, transfer, attempt),
            "amd_status_callback_method": "POST"} if detect else {}
        participant: Any = call_api(lambda: client.conferences(conference_name(transfer))
                                    .participants.create(
            from_=caller,
            to=number,
            label=agent_label(attempt),
            timeout=ring_timeout(settings, transfer, attempt),
            early_media=False,
            beep="false",
            start_conference_on_enter=True,
            # The human leaving ends the conference, so nobody waits in an empty room.
            end_conference_on_exit=True,
            conference_status_callback=_url(settings, CONFERENCE_PATH, transfer),
            conference_status_callback_method="POST",
            conference_status_callback_event=CONFERENCE_EVENTS,
            **status, **amd,
        ))
        return str(participant.call_sid)

    def _place_group(self, rt: Runtime, transfer: Transfer, attempt: str,
                     members: list[str]) -> None:
        """A ring group: one call per member, all at once. Each asks /twilio/member on
        answering: the first to ask (claimed in Redis) joins the conference, any other is
        hung up there, so only one human ever reaches the customer. A retry places only the
        members not placed yet (their sids are recorded one by one)."""
        settings = rt.settings
        client = make_client(settings, transfer)
        caller = transfer.caller_number or transfer.outbound_number
        place_group(rt, transfer, attempt, members, provider=self.name,
                    pre_bridge=PRE_BRIDGE, place=lambda j, member: self._create_member_leg(
                        settings, client, transfer, attempt, j, member, caller))

    @staticmethod
    def _create_member_leg(settings: Settings, client: Client, transfer: Transfer,
                           attempt: str, member: int, number: str, caller: str) -> str:
        extra = {"m": str(member)}
        status: dict[str, Any] = {
            "status_callback": _url(settings, AGENT_STATUS_PATH, transfer, attempt, extra),
            "status_callback_method": "POST",
            "status_callback_event": ["initiated", "ringing", "answered", "completed"]}
        if is_sip(number):
            status.update(sip_auth(settings, transfer))
            number = sip_to(transfer, number)
        # Synchronous detection: the verdict comes with the /twilio/member request, which
        # hangs up on a machine (SDK call/__init__.py, async_amd).
        detect = {"machine_detection": "Enable"} if transfer.voicemail_detection else {}
        call: Any = call_api(lambda: client.calls.create(
            to=number, from_=caller, timeout=ring_timeout(settings, transfer, attempt),
            url=_url(settings, MEMBER_PATH, transfer, attempt,
                     {"lead_id": transfer.lead_id, **extra}),
            method="POST", **status, **detect))
        return str(call.sid)

    def hang_up_group(self, rt: Runtime, transfer: Transfer,
                      keep: str = "") -> None:
        """Best effort: end every leg of the current group but `keep` (the one that took the
        call). A member still ringing is canceled; one that answered was hung up by
        /twilio/member already."""
        for sid in group_legs(transfer, str(transfer.attempt)):
            if sid != keep:
                self.hang_up(rt, transfer, sid, "canceled")

    @staticmethod
    def _find_live_dial(client: Client, transfer: Transfer, number: str
                        ) -> str | None:
        # From either caller ID the leg may have been placed with (see _dial).
        for caller in dict.fromkeys(filter(None, (transfer.caller_number,
                                                  transfer.outbound_number))):
            calls: Any = call_api(partial(client.calls.list, to=number, from_=caller,
                                          limit=20))
            for call in calls:
                if str(call.status) in ("queued", "initiated", "ringing", "in-progress"):
                    return str(call.sid)
        return None

    def ensure_dialed(self, rt: Runtime, transfer_id: str, task_id: str) -> None:
        """After a move to the next destination: its leg, unless already placed (a retried
        or redelivered task arrives here after the step it repeats). One task places it:
        a duplicate callback's task, running at the same time, leaves it to that one."""
        found = next_to_place(rt, transfer_id, task_id, PRE_BRIDGE)
        if found is not None:
            self._place(rt, *found)

    def brief(self, rt: Runtime, transfer: Transfer, agent_sid: str,
              task_id: str) -> bool:
        """Have Twilio speak the summary to the human alone (an announcement to that
        participant, before the customer is in the conference). True when it was asked."""
        tid = transfer.transfer_id
        attempt = transfer.attempt
        conference_sid = transfer.extra.get("conference_sid", "")
        if not conference_sid.startswith("CF"):
            # The participant update is addressed by the conference's SID, never its name.
            rt.store.note(tid, "conference SID unknown; bridging without the briefing")
            return False
        if not rt.store.claim_for(f"brief:{tid}:{attempt}", task_id):
            return True  # another delivery of this join already asked for it
        # Which leg's announcement ends the briefing (the state may be past "dialing").
        rt.store.set_fields(tid, briefed_sid=agent_sid)
        rt.store.transition(tid, State.HUMAN_ANSWERED, "human agent joined; briefing them",
                            from_states=(State.REQUESTED, State.DIALING))
        client = make_client(rt.settings, transfer)
        url = _url(rt.settings, WHISPER_PATH, transfer)
        try:
            call_api(lambda: client.conferences(conference_sid)
                     .participants(agent_sid).update(announce_url=url, announce_method="POST"))
        except PermanentProviderError as exc:
            rt.logger(transfer).warning("briefing refused; bridging without it",
                                        extra={"error": str(exc)})
            return False
        return True

    def bridge(self, rt: Runtime, transfer: Transfer, task_id: str) -> None:
        tid = transfer.transfer_id
        if not claim_bridge(rt, tid, "human agent joined; moving the customer", task_id,
                            PRE_BRIDGE):
            return
        client = make_client(rt.settings, transfer)
        twiml = customer_twiml(rt.settings, transfer)
        try:
            call_api(lambda: client.calls(transfer.call_id).update(twiml=twiml))
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

    def cleanup(self, rt: Runtime, transfer: Transfer) -> None:
        current = rt.store.get_record(transfer.transfer_id) or transfer
        self.hang_up_group(rt, current, keep=current.agent_call_sid)
        # "canceled" ends only a call still ringing; a leg seen in the conference has been
        # answered, whatever its status callbacks have said so far.
        ringing = current.extra.get("agent_status", "") in RINGING and not current.extra.get(
            "conference_sid")
        status = "canceled" if ringing else "completed"
        self.hang_up(rt, transfer, current.agent_call_sid, status)

    def hang_up(self, rt: Runtime, transfer: Transfer, call_sid: str,
                status: str) -> None:
        """Best effort: end a human leg (`canceled` while it rings, else `completed`)."""
        if not call_sid:
            return
        try:
            client = make_client(rt.settings, transfer)
            call_api(lambda: client.calls(call_sid).update(status=status))
        except (PermanentProviderError, TransientProviderError) as exc:
            rt.logger(transfer).warning("could not hang up the human leg",
                                        extra={"error": str(exc)})
            return
        rt.store.note(transfer.transfer_id, f"human agent leg {status}")

    def handle_callback(self, rt: Runtime, transfer: Transfer, kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        callbacks.handle_callback(self, rt, transfer, kind, params, task_id)

    def customer_call_ended(self, rt: Runtime, transfer: Transfer,
                            params: Mapping[str, str]) -> bool:
        return callbacks.customer_call_ended(self, rt, transfer, params)

    def reconcile(self, rt: Runtime, transfer: Transfer) -> bool:
        return callbacks.reconcile(self, rt, transfer)
