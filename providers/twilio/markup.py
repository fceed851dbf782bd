"""What Twilio is served: the TwiML of the human's screening, the briefing, the joins
into the conference `transfer-{lead_id}`, and the paths of our Twilio callbacks."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Dial, VoiceResponse

from providers.base import callback_url, key_prompt, screening_key
from shared.config import Settings

AGENT_STATUS_PATH = "/twilio/agent-status"
CONFERENCE_PATH = "/twilio/conference"
WHISPER_PATH = "/twilio/whisper"
SCREEN_PATH = "/twilio/screen"
SCREEN_RESULT_PATH = "/twilio/screen-result"
AMD_PATH = "/twilio/amd"

# What the human hears first (issue 20: the summary is the AI's note, not ours).
BRIEFING_INTRO = "Incoming transfer."


def conference_name(transfer: Mapping[str, str]) -> str:
    return f"transfer-{transfer['lead_id']}"


def screen_query(transfer: Mapping[str, str]) -> dict[str, str]:
    """What /twilio/screen and /twilio/screen-result need besides the summary, carried in
    the URLs we give Twilio so that they answer without Redis. Twilio signs the full URL,
    so nobody without the auth token can alter it."""
    return {"lead_id": transfer["lead_id"], "key": screening_key(transfer),
            "timeout": transfer.get("screening_timeout") or "8"}


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
    gather = response.gather(
        input="dtmf", num_digits=1, timeout=int(screen.get("timeout") or 8), method="POST",
        action=callback_url(settings, SCREEN_RESULT_PATH, screen["transfer_id"], attempt,
                             {k: screen[k] for k in ("lead_id", "key", "timeout")}),
        action_on_empty_result=True)
    gather.say(briefing(summary))
    gather.say(key_prompt({"screening_key": screen.get("key", "")}))
    return str(response.to_xml(xml_declaration=False))


def agent_join_twiml(settings: Settings, transfer: Mapping[str, str], attempt: str) -> str:
    """The screened human accepted: into the conference, as the Participants API would."""
    response = VoiceResponse()
    dial = Dial()
    dial.conference(
        conference_name(transfer), start_conference_on_enter=True,
        end_conference_on_exit=True, beep=False, participant_label=agent_label(attempt),
        status_callback=callback_url(settings, CONFERENCE_PATH, transfer["transfer_id"]),
        # The first participant's events are the conference's (twiml/conference,
        # statusCallback): only the joins are acted on (see handoff.CONFERENCE_EVENTS).
        status_callback_method="POST", status_callback_event="join")
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


def customer_twiml(settings: Settings, transfer: Mapping[str, str]) -> str:
    response = VoiceResponse()
    dial = Dial()
    dial.conference(
        conference_name(transfer),
        start_conference_on_enter=True,
        end_conference_on_exit=True,
        beep=False,
        participant_label="customer",
        status_callback=callback_url(settings, CONFERENCE_PATH, transfer["transfer_id"]),
        status_callback_method="POST",
        # One space-separated string: a list would render as "['join', ...]". Only the
        # joins are acted on (the human's leg created the conference: its events rule).
        status_callback_event="join",
    )
    response.append(dial)
    return str(response.to_xml(xml_declaration=False))
