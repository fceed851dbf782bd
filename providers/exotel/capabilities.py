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
    # Connect goes down the whole list on any unanswered outcome, without asking us.
    "fallback_on": Refused("its Connect applet dials the next number on any unanswered "
                           "outcome"),
    "extension": Refused("not built"),
}
