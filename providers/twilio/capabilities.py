"""Which transfer policies Twilio carries out, and how."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import Capability, Refused, Supported

CAPABILITIES: Mapping[str, Capability] = {
    "voicemail_detection": Supported("AMD on the human's leg (AmdStatusCallback)"),
    "screening": Supported("our <Gather> on the human's leg before the conference"),
    "caller_id_customer": Supported("the customer's number, else ours when Twilio refuses it"),
    "hold_audio_url": Supported("nothing to hold: the customer stays with the AI until the "
                                "human is in the conference"),
    "ring_timeout_per_destination": Supported("each leg's timeout"),
    "fallback_on": Supported("the store's advance step stops at an outcome not named"),
    "extension": Supported("the leg is placed with calls.create and our TwiML plays the "
                           "digits (<Play digits>) before it joins the conference"),
    # Accepted as a no-op: the conference handoff already reaches the human first.
    "handoff_agent_first": Supported("its one handoff: the human joins the conference first"),
    "sip_destination": Supported("the SIP URI as the leg's To, our headers as its URI "
                                 "headers"),
    "ring_group": Supported("a call per member whose answer asks /twilio/member: the first "
                            "(claimed in Redis) joins the conference, any other hangs up"),
    "ring_group_screening": Refused("not built: a group member's leg is gated by "
                                    "/twilio/member, not by the screening prompt"),
}
