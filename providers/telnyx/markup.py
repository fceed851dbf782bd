"""What we have Telnyx say on the human's leg: the briefing (`speak`) and the screening
prompt (`gather_using_speak`). Telnyx runs no markup of ours: these are command bodies.

Fields: api/call-control/gather-using-speak (payload, voice, language, minimum_digits,
maximum_digits, valid_digits, timeout_millis, client_state, command_id); speak takes the
same payload, voice and language.
"""

from __future__ import annotations

from typing import Any

from providers.base import key_prompt
from shared.model import Transfer

# "For service_level basic, you may define the gender of the speaker (male or female)";
# basic allows "only the en-US language and payload type text" (call-commands/speak-text).
VOICE = "female"
LANGUAGE = "en-US"
SERVICE_LEVEL = "basic"
GENERIC_INTRO = "You have a transfer from the AI assistant."
ALL_KEYS = "0123456789*#"


def briefing(transfer: Transfer, client_state: str, command_id: str
             ) -> dict[str, Any]:
    """The `speak` body: the summary, to the human alone (the customer is not bridged yet)."""
    return {"payload": transfer.summary or GENERIC_INTRO, "voice": VOICE,
            "language": LANGUAGE, "service_level": SERVICE_LEVEL, "client_state": client_state,
            "command_id": command_id}


def screening(transfer: Transfer, client_state: str, command_id: str
              ) -> dict[str, Any]:
    """The `gather_using_speak` body: the summary and the key prompt, one key. Every key is
    valid, so that a wrong one ends the gather (status valid, other digits) instead of
    replaying the prompt."""
    timeout = transfer.screening_timeout
    return {"payload": f"{transfer.summary or GENERIC_INTRO} {key_prompt(transfer)}",
            "voice": VOICE, "language": LANGUAGE, "service_level": SERVICE_LEVEL,
            "minimum_digits": 1, "maximum_digits": 1,
            "valid_digits": ALL_KEYS, "timeout_millis": timeout * 1000,
            "client_state": client_state, "command_id": command_id}
