"""Which transfer policies Telnyx carries out, and how."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import Capability, Refused, Supported

CAPABILITIES: Mapping[str, Capability] = {
    "voicemail_detection": Supported("the dial's answering_machine_detection (detect)"),
    "screening": Supported("gather_using_speak on the human's leg before the bridge"),
    "caller_id_customer": Supported("the dial's from, else ours when Telnyx refuses it"),
    "hold_audio_url": Supported("nothing to hold: the customer stays with the AI until the "
                                "bridge"),
    "ring_timeout_per_destination": Supported("each dial's timeout_secs"),
    "fallback_on": Supported("the store's advance step stops at an outcome not named"),
    "extension": Supported("actions/send_dtmf on the answered leg, before the briefing"),
    # Accepted as a no-op: Telnyx's only handoff already reaches the human first.
    "handoff_agent_first": Supported("its one handoff: the human is dialed first"),
    "sip_destination": Supported("the SIP URI as the dial's to, our headers as its "
                                 "custom_headers"),
    "ring_group": Supported("a dial per member; the first answered (a person, with "
                            "detection) is claimed and bridged, the others hung up"),
    "ring_group_screening": Refused("the first member to answer takes the destination "
                                    "before the prompt: one who declines would end the group"),
}
