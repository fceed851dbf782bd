"""Which transfer policies Exotel carries out: none of the optional ones (the flow's
Connect applet dials; we only answer it the numbers)."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import Capability, Refused

CAPABILITIES: Mapping[str, Capability] = {
    "voicemail_detection": Refused(""),
    "screening": Refused(""),
    "caller_id_customer": Refused(""),
    "hold_audio_url": Refused(""),
    # Exotel's Connect takes one ringing duration for the whole list.
    "ring_timeout_per_destination": Refused(""),
    # The flow's Connect applet is the handoff; there is no other.
    "handoff_agent_first": Refused(""),
}
