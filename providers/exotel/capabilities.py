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
    # The flow's Connect applet is the handoff; there is no other.
    "handoff_agent_first": Refused(""),
    "sip_destination": Refused("its Connect applet dials phone numbers only"),
    "ring_group": Refused("its Connect applet rings a list in order"),
    "ring_group_screening": Refused(""),
}

# Conformance cases (tests/conformance) Exotel's flow cannot show, and why.
_ONE_NUMBER = ("the flow's Connect applet asks the 'Dial whom' URL, which dials one number "
               "(only programmable connect goes down a list)")
CONFORMANCE_EXCLUDES: Mapping[str, str] = {
    "fallback": _ONE_NUMBER,
    "duplicated_shuffled_fallback": _ONE_NUMBER,
    # Connect dials and reports; only a Passthru after it names the number (DialWhomNumber,
    # support.exotel.com/support/solutions/articles/48283), and the sandbox's flow has none.
    "destination_index": "the StatusCallback names no dialed number; only a Passthru "
                         "after Connect does",
}
