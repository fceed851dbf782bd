"""Telnyx Call Control v2: the human is dialed first, then bridged to the customer.

1. Dial the human as a new call (`POST /v2/calls`) from the lead's outbound number (or the
   customer's, with caller_id: customer), with `client_state` naming the transfer and the
   destination, `timeout_secs` the ring timeout and, with voicemail detection,
   `answering_machine_detection: detect`. The AI keeps the customer meanwhile.
2. When the human has answered (and detection says a person; with a summary, once `speak`
   has briefed them; with screening, once `gather_using_speak` heard the key), bridge the
   customer's call to theirs (`POST /v2/calls/{customer}/actions/bridge`), then stop the
   media streams on the customer's call (`actions/streaming_stop`: the AI's audio).
3. Success when the human's leg reports `call.bridged`.

A human leg that ends before the bridge (busy, no answer, rejected, voicemail, declined)
is followed by the next destination while the customer stays with the AI. The customer
hanging up while the human rings hangs the human's leg up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from providers import accounts
from providers.base import (
    NETWORK_ERRORS,
    PermanentProviderError,
    TransientProviderError,
    account_for,
    cached_client,
    claim_bridge,
    current_destination,
    extension,
    group_legs,
    next_to_place,
    place_group,
    place_leg,
    screening_key,
    sip_headers,
    sort_http_failure,
    unreachable,
)
from providers.telnyx import markup
from providers.telnyx.account import TelnyxAccount
from providers.telnyx.callbacks import (
    DTMF_MILLIS,
    TelnyxKind,
    dtmf_playout,
    encode_state,
    failure_reason,
    is_machine,
)
from shared.celery_config import TASK_PROVIDER_CALLBACK, TRANSFERS_QUEUE
from shared.config import Settings
from shared.contracts import GROUP_SEPARATOR
from shared.http import settle_environment
from shared.model import Cause, State, Transfer
from shared.phone import is_sip
from shared.store import ring_timeout

if TYPE_CHECKING:
    from workers.runtime import Runtime

WEBHOOK_PATH = "/telnyx/webhook"
CALLBACK_KINDS = frozenset({TelnyxKind.CALL_EVENT, TelnyxKind.EXTENSION_SENT})
# Fields of a human leg, besides the store's, cleared when moving to the next destination.
LEG_FIELDS = ("agent_answered", "member")
# Past the deadline, how long an answered leg's verdict / briefing / key is still awaited.
GRACE = 35.0

_PRE_BRIDGE = (State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED)
# A human leg that ended like this, before the bridge, moves on to the next destination.
_MOVE_ON = frozenset({"busy", "no_answer", "failed", "voicemail", "declined", "agent_hung_up"})


class TelnyxClient:
    """The few Call Control v2 requests we make, with `requests` (JSON, bearer API key)."""

    def __init__(self, api_key: str, base_url: str, timeout: float) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.session = settle_environment(requests.Session(), self.base)
        # api-reference: "Bearer authentication header of the form Bearer <token>".
        self.session.headers.update({"Authorization": f"Bearer {api_key}",
                                     "Accept": "application/json"})

    def _send(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            resp = self.session.request(method, f"{self.base}{path}", json=body,
                                        timeout=self.timeout)
        except NETWORK_ERRORS as exc:
            raise unreachable("telnyx", exc, read_only=method == "GET") from exc
        if resp.status_code >= 400:
            raise sort_http_failure("telnyx", resp.status_code, _error_text(resp))
        try:
            return resp.json()
        except ValueError:
            return {}

    def dial(self, body: Mapping[str, Any]) -> str:
        """POST /v2/calls; the new call's call_control_id (api-reference/call-commands/dial)."""
        data = self._send("POST", "/v2/calls", body).get("data") or {}
        ccid = data.get("call_control_id")
        if not isinstance(ccid, str) or not ccid:
            raise TransientProviderError("telnyx dial answered without a call_control_id",
                                         outcome_unknown=True)
        return ccid

    def action(self, ccid: str, action: str, body: Mapping[str, Any]) -> None:
        """POST /v2/calls/{call_control_id}/actions/{action}."""
        self._send("POST", f"/v2/calls/{quote(ccid, safe=':')}/actions/"
                   f"{action}", body)

    def status(self, ccid: str) -> Mapping[str, Any]:
        """GET /v2/calls/{call_control_id}: is_alive... (call-information/retrieve-a-call-
        status)."""
        data = self._send("GET", f"/v2/calls/{quote(ccid, safe=':')}")
        return data.get("data") or {}


def _error_text(resp: requests.Response) -> str:
    # Errors: {"errors": [{"code", "title", "detail"}]} (retrieve-a-call-status, default).
    try:
        errors = resp.json().get("errors") or []
        first = errors[0] if errors else {}
        return f"{first.get('code', '')} {first.get('title', '')} {first.get('detail', '')}"\
            .strip() or resp.reason
    except (ValueError, AttributeError, IndexError):
        return resp.reason or ""


# A ring group none of whose members took the call ends with the most telling of their
# outcomes: someone let it ring out, else someone was busy, and so on.
_GROUP_OUTCOMES = ("no_answer", "busy", "declined", "voicemail", "agent_hung_up", "failed")


def sip_auth(account: TelnyxAccount) -> dict[str, str]:
    """The credentials for a SIP destination's digest challenge: the account's, from the
    credential source, never from the request."""
    user = account.secret("sip_auth_username")
    password = account.secret("sip_auth_password")
    return {"sip_auth_username": user, "sip_auth_password": password} \
        if user and password else {}


def _account_query(transfer: Transfer) -> str:
    account = transfer.account
    return "" if account == accounts.DEFAULT else f"?account={quote(account, safe='')}"


def account_of(settings: Settings, transfer: Transfer) -> TelnyxAccount:
    """The credentials of the transfer's account (ProviderNotConfigured when it has none)."""
    return account_for(settings, "telnyx", transfer, TelnyxAccount,
                       "TELNYX_API_KEY and TELNYX_CONNECTION_ID")


def make_client(settings: Settings, transfer: Transfer) -> TelnyxClient:
    """A client authenticated as the transfer's account."""
    account = account_of(settings, transfer)
    key = account.secret("api_key")
    return cached_client(("telnyx", key, account.api_base_url,
                          str(settings.provider_http_timeout)),
                         lambda: TelnyxClient(key, account.api_base_url,
                                              settings.provider_http_timeout))


def _command_id(transfer: Transfer, what: str) -> str:
    # "Telnyx will ignore any command with the same command_id for the same call_control_id"
    # (api/call-control/bridge-call): a retried task repeats the command harmlessly.
    return f"{transfer.transfer_id}:{transfer.attempt}:{what}"


class TelnyxProvider:
    name = "telnyx"

    def start(self, rt: Runtime, transfer: Transfer) -> None:
        self._place(rt, transfer, "0", transfer.transfer_number)

    def _place(self, rt: Runtime, transfer: Transfer, attempt: str,
               number: str) -> None:
        if GROUP_SEPARATOR in number:
            self._place_group(rt, transfer, attempt, number.split(GROUP_SEPARATOR))
            return
        settings = rt.settings
        client = make_client(settings, transfer)
        tid = transfer.transfer_id
        note = "dialing the human agent" if attempt == "0" else \
            f"dialing destination {int(attempt) + 1}"
        body = self._dial_body(settings, transfer, attempt, number, f"{tid}:{attempt}:dial")
        # Only a leg recorded by a worker that died before moving on is found: Telnyx has no
        # documented search by number. An unrecorded one's call.initiated webhook carries
        # our client_state and records it (handle_callback); a second leg is the least bad
        # outcome.
        place_leg(rt, transfer, attempt, provider=self.name, pre_bridge=_PRE_BRIDGE,
                  note=note, find=lambda: transfer.agent_call_sid or None,
                  dial=lambda: {"agent_call_sid": self._dial(rt, client, transfer, body)})

    @staticmethod
    def _dial_body(settings: Settings, transfer: Transfer, attempt: str,
                   number: str, command_id: str) -> dict[str, Any]:
        account = account_of(settings, transfer)
        body: dict[str, Any] = {
            "connection_id": account.connection_id,
            "to": number,
            "from": transfer.caller_number or transfer.outbound_number,
            "timeout_secs": ring_timeout(settings, transfer, attempt),
            "client_state": encode_state(transfer.transfer_id, attempt),
            # The account picks the public key the leg's webhooks are checked with.
            "webhook_url": settings.public_url(WEBHOOK_PATH) + _account_query(transfer),
            "command_id": command_id,
        }
        if transfer.voicemail_detection:
            body["answering_machine_detection"] = "detect"
        if is_sip(number):
            # "The DID or SIP URI to dial out to"; custom_headers: "Custom headers to be
            # added to the SIP INVITE" ({name, value}); sip_auth_username/_password: "used
            # for SIP challenges" (api-reference/call-commands/dial; telnyx-python
            # call_dial_params.py).
            body["custom_headers"] = [{"name": n, "value": v}
                                      for n, v in sip_headers(transfer)]
            body.update(sip_auth(account))
        return body

    def _place_group(self, rt: Runtime, transfer: Transfer, attempt: str,
                     members: list[str]) -> None:
        """A ring group: one dial per member, all at once. The first member answered (and,
        with detection, a person) is claimed in Redis and bridged; every other leg is hung
        up. A retry dials only the members not dialed yet (recorded one by one)."""
        settings = rt.settings
        client = make_client(settings, transfer)
        tid = transfer.transfer_id
        place_group(rt, transfer, attempt, members, provider=self.name,
                    pre_bridge=_PRE_BRIDGE, place=lambda j, member: self._dial(
                        rt, client, transfer, self._dial_body(
                            settings, transfer, attempt, member,
                            f"{tid}:{attempt}:dial:{j}")))

    def _member_event(self, rt: Runtime, transfer: Transfer,
                      params: Mapping[str, str], task_id: str) -> None:
        """An event of a ring group member's leg that has not taken the call."""
        tid, attempt = transfer.transfer_id, str(transfer.attempt)
        event, ccid = params.get("event_type", ""), params.get("call_control_id", "")
        if event == "call.answered":
            rt.store.set_fields(tid, **{f"answered:{ccid}": "1"})
            self._member_ready(rt, tid, ccid, task_id)
        elif event == "call.machine.detection.ended":
            result = params.get("result", "") or "not_sure"
            rt.store.set_fields(tid, **{f"verdict:{ccid}": result})
            if is_machine(result):
                self._hang_up(rt, transfer, ccid)  # its call.hangup says voicemail
            else:
                self._member_ready(rt, tid, ccid, task_id)
        elif event == "call.hangup":
            current = rt.store.get_record(tid) or transfer
            if current.agent_call_sid:
                rt.store.note(tid, "a group member's leg ended: another took the call")
                return
            answered = bool(current.extra.get(f"answered:{ccid}"))
            reason = "voicemail" if is_machine(current.extra.get(f"verdict:{ccid}", "")) else \
                failure_reason(params, answered=answered)
            rt.store.set_fields(tid, **{f"ended:{ccid}": reason})
            current = rt.store.get_record(tid) or current
            legs = group_legs(current, attempt)
            count = len(current_destination(current).split(GROUP_SEPARATOR))
            ended = [current.extra.get(f"ended:{c}", "") for c in legs]
            if len(legs) < count or not all(ended) or current.agent_call_sid:
                rt.store.note(tid, f"a group member not reached ({reason})")
                return
            worst = next(r for r in _GROUP_OUTCOMES if r in ended or r == "failed")
            self._not_reached(rt, current, worst, "no member of the group took the call",
                              task_id, cause=Cause.of(params.get("sip_hangup_cause"),
                                                      params.get("hangup_cause")))
        else:
            rt.store.note(tid, f"{event} of a group member")

    def _member_ready(self, rt: Runtime, tid: str, ccid: str, task_id: str) -> None:
        """A member answered (and detection, if asked, says a person): the first takes the
        destination (a claim in Redis), then is briefed, screened or bridged as any human
        leg; any later one is hung up."""
        current = rt.store.get_record(tid)
        if current is None:
            return
        attempt = str(current.attempt)
        if current.state not in _PRE_BRIDGE:
            self._hang_up(rt, current, ccid)
            return
        if not current.extra.get(f"answered:{ccid}"):
            return
        verdict = current.extra.get(f"verdict:{ccid}", "")
        if current.voicemail_detection and not verdict:
            return  # its verdict decides
        if not rt.store.claim_for(f"member:{tid}:{attempt}", ccid):
            self._hang_up(rt, current, ccid)
            return
        legs = group_legs(current, attempt)
        rt.store.set_fields(tid, agent_call_sid=ccid, agent_answered="1",
                            agent_status="answered",
                            member=str(legs.index(ccid)) if ccid in legs else "",
                            **({"answered_by": verdict} if verdict else {}))
        rt.store.transition(tid, State.HUMAN_ANSWERED, "a group member answered",
                            from_states=(State.REQUESTED, State.DIALING))
        for other in legs:
            if other != ccid and not current.extra.get(f"ended:{other}"):
                self._hang_up(rt, current, other)
        self._maybe_engage(rt, tid, task_id)

    @staticmethod
    def _dial(rt: Runtime, client: TelnyxClient, transfer: Transfer,
              body: dict[str, Any]) -> str:
        try:
            return client.dial(body)
        except PermanentProviderError as exc:
            if body["from"] == transfer.outbound_number or exc.status not in (400, 403, 422):
                raise
        # Telnyx may refuse a caller ID the account does not own: ours instead.
        rt.store.note(transfer.transfer_id, "Telnyx refused the customer's number as "
                      "caller ID; dialing with the lead's outbound number")
        return client.dial({**body, "from": transfer.outbound_number,
                            "command_id": body["command_id"] + ":own"})

    def ensure_dialed(self, rt: Runtime, transfer_id: str, task_id: str) -> None:
        """After a move to the next destination: its leg, unless already placed."""
        found = next_to_place(rt, transfer_id, task_id, _PRE_BRIDGE)
        if found is not None:
            self._place(rt, *found)

    def _not_reached(self, rt: Runtime, transfer: Transfer, reason: str,
                     note: str, task_id: str, *, hang_up: bool = False,
                     cause: Cause | None = None) -> None:
        """The current destination will not take the call: the next one, or the end."""
        tid = transfer.transfer_id
        attempt = str(transfer.attempt)
        if hang_up:
            self._hang_up(rt, transfer, transfer.agent_call_sid)
        if reason in _MOVE_ON and transfer.state in _PRE_BRIDGE:
            outcome, _, _ = rt.store.advance_destination(tid, int(attempt), reason,
                                                         leg_fields=LEG_FIELDS, cause=cause)
            if outcome in ("next", "stale"):
                self.ensure_dialed(rt, tid, task_id)
                return
            if outcome == "final":
                return
        rt.fail(transfer, reason, note, from_states=(*_PRE_BRIDGE, State.BRIDGING))

    def handle_callback(self, rt: Runtime, transfer: Transfer, kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        tid = transfer.transfer_id
        event = params.get("event_type", "")
        ccid = params.get("call_control_id", "")
        attempt = str(transfer.attempt)
        agent = transfer.agent_call_sid
        if (kind == TelnyxKind.CALL_EVENT and params.get("attempt") == attempt
                and GROUP_SEPARATOR in current_destination(transfer) and ccid != agent):
            self._member_event(rt, transfer, params, task_id)
            return
        # The current leg: by its call_control_id, or by our client_state's attempt while
        # the dial's answer has not recorded the id yet. Anything else is a leg left behind.
        current = (bool(agent) and ccid == agent) or (
            not agent and params.get("attempt") == attempt)
        if not current:
            rt.store.note(tid, f"{event or kind} of another leg ignored")
            self.ensure_dialed(rt, tid, task_id)
            return
        if kind == TelnyxKind.EXTENSION_SENT:
            rt.store.set_fields(tid, extension_sent=attempt)
            rt.store.note(tid, "extension dialed on the human's leg")
            self._maybe_engage(rt, tid, task_id)
            return
        if not agent and ccid:
            rt.store.set_fields(tid, agent_call_sid=ccid)
            rt.store.index_call(self.name, ccid, tid)
            transfer = replace(transfer, agent_call_sid=ccid)
        if event == "call.initiated":
            rt.store.set_fields(tid, agent_status="initiated")
            rt.store.note(tid, "human agent leg initiated")
        elif event == "call.answered":
            rt.store.set_fields(tid, agent_status="answered", agent_answered="1")
            rt.store.transition(tid, State.HUMAN_ANSWERED, "human agent answered",
                                from_states=(State.REQUESTED, State.DIALING))
            self._maybe_engage(rt, tid, task_id)
        elif event == "call.machine.detection.ended":
            result = params.get("result", "")
            rt.store.set_fields(tid, answered_by=result or "not_sure")
            if is_machine(result):
                self._not_reached(rt, transfer, "voicemail", "answering machine on the "
                                  "human's leg", task_id, hang_up=True)
                return
            rt.store.note(tid, f"answering-machine detection: {result or 'no verdict'}")
            self._maybe_engage(rt, tid, task_id)
        elif event == "call.speak.ended":
            if params.get("status", "completed") == "completed":
                self._bridge(rt, transfer, task_id)
            # call_hangup: the leg's call.hangup moves on.
        elif event == "call.gather.ended":
            self._gathered(rt, transfer, params, task_id)
        elif event == "call.bridged":
            rt.succeed(transfer, "customer bridged to the human agent",
                       from_states=(State.BRIDGING,))
        elif event == "call.hangup":
            self._leg_ended(rt, transfer, params, task_id)

    def _leg_ended(self, rt: Runtime, transfer: Transfer, params: Mapping[str, str],
                   task_id: str) -> None:
        tid = transfer.transfer_id
        current = rt.store.get_record(tid) or transfer
        rt.store.set_fields(tid, agent_status="hangup")
        if current.declined:
            reason = "declined"  # our hang-up after the wrong key (or none)
        elif is_machine(current.extra.get("answered_by", "")):
            reason = "voicemail"
        else:
            reason = failure_reason(params, answered=bool(current.extra.get("agent_answered")))
        self._not_reached(rt, current, reason, "human agent leg ended "
                          f"({params.get('hangup_cause', '?')}, SIP "
                          f"{params.get('sip_hangup_cause', '?')})", task_id,
                          # call.hangup's hangup_cause and sip_hangup_cause (callbacks/call-hangup).
                          cause=Cause.of(params.get("sip_hangup_cause"),
                                         params.get("hangup_cause")))

    def _maybe_engage(self, rt: Runtime, tid: str, task_id: str) -> None:
        """Once the leg is answered and (with detection) a person: brief, screen or bridge.
        Both events may come in either order (call.answered "before" detection ends,
        answering-machine-detection tutorial), so each checks the other's record."""
        current = rt.store.get_record(tid)
        if current is None or current.state not in _PRE_BRIDGE \
                or not current.extra.get("agent_answered"):
            return
        if current.voicemail_detection and not current.extra.get("answered_by"):
            rt.store.note(tid, "human agent answered; waiting for answering-machine detection")
            return
        attempt = str(current.attempt)
        digits = extension(current)
        if digits and current.extra.get("extension_sent") != attempt:
            self._send_extension(rt, current, digits, task_id)
            return
        if not rt.store.claim_for(f"engage:{tid}:{attempt}", task_id):
            return  # another delivery of these events is on it
        client = make_client(rt.settings, current)
        agent = current.agent_call_sid
        state = encode_state(tid, attempt)
        try:
            if current.screening:
                client.action(agent, "gather_using_speak", markup.screening(
                    current, state, _command_id(current, "gather")))
                rt.store.note(tid, "human agent answered; asking for the key")
                return
            if current.summary:
                client.action(agent, "speak", markup.briefing(
                    current, state, _command_id(current, "speak")))
                rt.store.note(tid, "human agent answered; briefing them")
                return
        except PermanentProviderError as exc:
            # Their leg has gone (Telnyx refuses commands on an ended call, 422): its
            # call.hangup moves on.
            rt.logger(current).warning("command on the human's leg refused",
                                       extra={"error": str(exc)})
            return
        self._bridge(rt, current, task_id)

    def _send_extension(self, rt: Runtime, current: Transfer, digits: str,
                        task_id: str) -> None:
        """Dial the destination's extension on the answered leg; the briefing, key or
        bridge follows once the digits have been played out (send_dtmf reports nothing:
        our own callback, delayed by their length)."""
        tid, attempt = current.transfer_id, str(current.attempt)
        if not rt.store.claim_for(f"dtmf:{tid}:{attempt}", task_id):
            return  # another delivery of these events is on it
        agent = current.agent_call_sid
        try:
            make_client(rt.settings, current).action(agent, "send_dtmf", {
                "digits": digits, "duration_millis": DTMF_MILLIS,
                "client_state": encode_state(tid, attempt),
                "command_id": _command_id(current, "send_dtmf")})
        except PermanentProviderError as exc:
            rt.logger(current).warning("send_dtmf refused", extra={"error": str(exc)})
            return  # their leg has gone: its call.hangup moves on
        rt.store.note(tid, "human agent answered; dialing the extension")
        rt.celery.send_task(TASK_PROVIDER_CALLBACK, kwargs={
            "provider": self.name, "kind": str(TelnyxKind.EXTENSION_SENT), "transfer_id": tid,
            "params": {"call_control_id": agent, "attempt": attempt}},
            queue=TRANSFERS_QUEUE, countdown=dtmf_playout(digits))

    def _gathered(self, rt: Runtime, transfer: Transfer, params: Mapping[str, str],
                  task_id: str) -> None:
        status, digits = params.get("status", ""), params.get("digits", "")
        if status == "call_hangup":
            return  # their call.hangup moves on
        if status == "valid" and digits == screening_key(transfer):
            self._bridge(rt, transfer, task_id)
            return
        # A wrong key, none (timeout) or an invalid entry: declined.
        rt.store.set_fields(transfer.transfer_id, declined="1")
        self._not_reached(rt, transfer, "declined", f"human agent did not accept the call "
                          f"(screening: {status or 'no status'})", task_id, hang_up=True)

    def _bridge(self, rt: Runtime, transfer: Transfer, task_id: str) -> None:
        tid = transfer.transfer_id
        if not claim_bridge(rt, tid, "human agent ready; bridging the customer", task_id,
                            _PRE_BRIDGE):
            return
        current = rt.store.get_record(tid) or transfer
        client = make_client(rt.settings, current)
        try:
            # The customer's call is bridged to the human's; no client_state here: the
            # customer's call keeps the platform's.
            client.action(current.call_id, "bridge", {
                "call_control_id": current.agent_call_sid,
                "command_id": _command_id(current, "bridge")})
        except PermanentProviderError as exc:
            # 422: the customer's call (or the human's) is no longer there.
            rt.logger(current).warning("bridge refused", extra={"error": str(exc)})
            if rt.fail(current, "customer_hung_up", f"bridge refused: {exc}",
                       from_states=(State.BRIDGING,)):
                self.cleanup(rt, current)
            return
        rt.store.set_fields(tid, customer_moved="1")
        rt.store.note(tid, "customer bridged; stopping the AI's media stream")
        try:
            # "If the stream_id is not provided the command stops all streams associated
            # with a given call_control_id" (call-commands/streaming-stop): the AI's audio.
            client.action(current.call_id, "streaming_stop",
                          {"command_id": _command_id(current, "streaming_stop")})
        except PermanentProviderError as exc:
            # No stream on the call (the platform's AI hears it another way): the success
            # event's end_conversation tells it to leave.
            rt.store.note(tid, f"no media stream stopped ({exc.status})")

    def customer_call_ended(self, rt: Runtime, transfer: Transfer,
                            params: Mapping[str, str]) -> bool:
        # The AI holds the customer until the bridge: their hanging up ends the transfer.
        if rt.fail(transfer, "customer_hung_up", "customer hung up before the bridge",
                   from_states=(*_PRE_BRIDGE, State.BRIDGING)):
            self.cleanup(rt, transfer)
        return False

    def reconcile(self, rt: Runtime, transfer: Transfer) -> bool:
        """The deadline: ask Telnyx whether the human's leg is alive. An answered leg still
        being detected, briefed or screened gets GRACE more seconds, once per destination;
        anything else fails as `timeout`."""
        agent = transfer.agent_call_sid
        attempt = str(transfer.attempt)
        if (not agent or transfer.state not in _PRE_BRIDGE
                or not transfer.extra.get("agent_answered")
                or transfer.extra.get("grace") == attempt):
            return False
        try:
            alive = bool(make_client(rt.settings, transfer).status(agent).get("is_alive"))
        except (PermanentProviderError, TransientProviderError):
            return False
        if not alive:
            return False
        rt.store.set_fields(transfer.transfer_id, grace=attempt)
        rt.store.extend_deadline(transfer.transfer_id, time.time() + GRACE)
        rt.store.note(transfer.transfer_id, "deadline: the human's answered leg is alive; "
                      "waiting for detection, briefing or key")
        return True

    def cleanup(self, rt: Runtime, transfer: Transfer) -> None:
        current = rt.store.get_record(transfer.transfer_id) or transfer
        for ccid in group_legs(current, str(current.attempt)):
            if ccid != current.agent_call_sid and not current.extra.get(f"ended:{ccid}"):
                self._hang_up(rt, current, ccid)
        if current.extra.get("agent_status") != "hangup":
            self._hang_up(rt, current, current.agent_call_sid)

    def _hang_up(self, rt: Runtime, transfer: Transfer, ccid: str) -> None:
        """Best effort: end a human leg (ringing or answered: actions/hangup ends either)."""
        if not ccid:
            return
        try:
            make_client(rt.settings, transfer).action(ccid, "hangup", {
                "client_state": encode_state(transfer.transfer_id,
                                             str(transfer.attempt)),
                "command_id": f"{transfer.transfer_id}:{ccid[-12:]}:hangup"})
        except (PermanentProviderError, TransientProviderError) as exc:
            rt.logger(transfer).warning("could not hang up the human leg",
                                        extra={"error": str(exc)})
            return
        rt.store.note(transfer.transfer_id, "human agent leg hung up")
