"""What Twilio is served: the TwiML of the human's screening, the briefing, the joins
into the conference `transfer-{lead_id}`, and the paths of our Twilio callbacks."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from twilio.twiml.voice_response import Dial, VoiceResponse

from providers.base import (
    callback_url,
    extension,
    key_prompt,
    record_of,
    screening_key,
    sip_headers,
)
from shared.config import Settings
from shared.contracts import EXTENSION_FORMAT
from shared.model import Transfer

AGENT_STATUS_PATH = "/twilio/agent-status"
CONFERENCE_PATH = "/twilio/conference"
WHISPER_PATH = "/twilio/whisper"
SCREEN_PATH = "/twilio/screen"
SCREEN_RESULT_PATH = "/twilio/screen-result"
AMD_PATH = "/twilio/amd"
# A ring group member's leg asks here on answering whether it is the first (it joins).
MEMBER_PATH = "/twilio/member"

# What the human hears first (issue 20: the summary is the AI's note, not ours).
BRIEFING_INTRO = "Incoming transfer."


def conference_name(transfer: Transfer) -> str:
    return f"transfer-{transfer.lead_id}"


def screen_query(raw: Transfer | Mapping[str, str], attempt: str | None = None
                 ) -> dict[str, str]:
    """What /twilio/screen and /twilio/screen-result need besides the summary, carried in
    the URLs we give Twilio so that they answer without Redis. Twilio signs the full URL,
    so nobody without the auth token can alter it. `ext`: the destination's extension."""
    transfer = record_of(raw)  # the route's hash, or the worker's record
    digits = extension(transfer, attempt)
    return {"lead_id": transfer.lead_id, "key": screening_key(transfer),
            "timeout": str(transfer.screening_timeout),
            **({"ext": digits} if digits else {})}


# "The body of the URI element should be a valid SIP URI under 255 characters"
# (docs/voice/api/sip-making-calls): taken to include the headers, the least convenient
# reading (their own limit is 1024: docs/api/errors/21227).
MAX_SIP_URI = 254


def sip_to(transfer: Transfer, uri: str) -> str:
    """A SIP destination with our headers as URI headers: "sip:jack@example.com?x-my
    header=bar", several joined by & (docs/voice/api/receiving-sip), each value
    URL-encoded. The summary is cut (then the last headers dropped) to fit the limit."""
    headers = sip_headers(transfer)

    def build(items: list[tuple[str, str]]) -> str:
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in items)
        return f"{uri}?{query}" if query else uri

    names = [n for n, _ in headers]
    if "X-Transfer-Summary" in names and len(build(headers)) > MAX_SIP_URI:
        at = names.index("X-Transfer-Summary")
        summary = headers[at][1]
        while summary and len(build(headers)) > MAX_SIP_URI:
            summary = summary[:-1].rstrip()
            headers[at] = ("X-Transfer-Summary", summary)
        if not summary:
            del headers[at]
    while len(build(headers)) > MAX_SIP_URI and headers:
        headers.pop()
    return build(headers)


def valid_extension(digits: str) -> bool:
    return bool(EXTENSION_FORMAT.match(digits))


def _play_digits(response: VoiceResponse, digits: str) -> None:
    # "The digits attribute lets you play DTMF tones during a call ... Include w to
    # introduce a 0.5s pause" (twilio.com/docs/voice/twiml/play); verbs run one after
    # another (docs/voice/twiml), so what follows waits until the digits are sent.
    if digits:
        response.play(digits=digits)


def briefing(summary: str | None) -> str:
    """The words spoken to the human before the customer joins."""
    return f"{BRIEFING_INTRO} Note from the AI assistant: {summary}" if summary else \
        BRIEFING_INTRO


def agent_label(attempt: str) -> str:
    """The conference label of the human leg of an attempt (the first is "agent")."""
    return "agent" if attempt in ("", "0") else f"agent-{int(attempt) + 1}"


def hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml(xml_declaration=False))


def screen_twiml(settings: Settings, screen: Mapping[str, str], attempt: str,
                 summary: str | None) -> str:
    """What the screened human hears on answering: the briefing inside a <Gather> that
    waits for the key. `screen` is screen_query() plus transfer_id (from our own URL)."""
    response = VoiceResponse()
    _play_digits(response, screen.get("ext", ""))
    gather = response.gather(
        input="dtmf", num_digits=1, timeout=int(screen.get("timeout") or 8), method="POST",
        action=callback_url(settings, SCREEN_RESULT_PATH, screen["transfer_id"], attempt,
                             {k: screen[k] for k in ("lead_id", "key", "timeout")},
                             account=screen.get("account")),
        action_on_empty_result=True)
    gather.say(briefing(summary))
    gather.say(key_prompt(record_of({"screening_key": screen.get("key", "")})))
    return str(response.to_xml(xml_declaration=False))


def agent_join_twiml(settings: Settings, transfer: Transfer, attempt: str,
                     digits: str = "", *, announce: bool = False) -> str:
    """The human's leg into the conference, as the Participants API would: the screened
    human who accepted, the leg placed to dial an extension first (`digits`), or a ring
    group's first member. The last two are briefed by an announcement (`announce`; TwiML
    <Conference> has the `announcement` event: twilio.com/changelog/conference-announce-
    events)."""
    response = VoiceResponse()
    _play_digits(response, digits)
    dial = Dial()
    dial.conference(
        conference_name(transfer), start_conference_on_enter=True,
        end_conference_on_exit=True, beep=False, participant_label=agent_label(attempt),
        status_callback=callback_url(settings, CONFERENCE_PATH, transfer.transfer_id,
                                     account=transfer.account),
        # The first participant's events are the conference's (twiml/conference,
        # statusCallback): only the joins are acted on (see handoff.CONFERENCE_EVENTS), and
        # the announcement's end when the human is briefed after digits or as a member.
        status_callback_method="POST",
        status_callback_event="join" + (" announcement" if announce or digits else ""))
    response.append(dial)
    return str(response.to_xml(xml_declaration=False))


def goodbye_twiml() -> str:
    response = VoiceResponse()
    response.say("Okay, the call will not be connected. Goodbye.")
    response.hangup()
    return str(response.to_xml(xml_declaration=False))


def whisper_twiml(summary: str | None) -> str:
    """The briefing announced to the human before the customer joins (the generic intro
    when the summary cannot be read)."""
    response = VoiceResponse()
    response.say(briefing(summary))
    return str(response.to_xml(xml_declaration=False))


def customer_twiml(settings: Settings, transfer: Transfer) -> str:
    response = VoiceResponse()
    dial = Dial()
    dial.conference(
        conference_name(transfer),
        start_conference_on_enter=True,
        end_conference_on_exit=True,
        beep=False,
        participant_label="customer",
        status_callback=callback_url(settings, CONFERENCE_PATH, transfer.transfer_id,
                                     account=transfer.account),
        status_callback_method="POST",
        # One space-separated string: a list would render as "['join', ...]". Only the
        # joins are acted on (the human's leg created the conference: its events rule).
        status_callback_event="join",
    )
    response.append(dial)
    return str(response.to_xml(xml_declaration=False))
