"""Which transfer policies Plivo carries out, and how."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import Capability, Refused, Supported

# Of the default handoff (calls.transfer to our <Dial>); `handoff: "agent_first"` carries
# out voicemail_detection and screening by itself (see shared.contracts.AGENT_FIRST_POLICIES).
CAPABILITIES: Mapping[str, Capability] = {
    "voicemail_detection": Refused("its Dial has no machine detection; use handoff "
                                   "'agent_first' (the Call API's machine_detection), or "
                                   "screening: a voicemail cannot press the key"),
    "screening": Supported("the Dial's confirmSound and confirmKey; with handoff "
                           "'agent_first', our GetDigits"),
    "handoff_agent_first": Supported("calls.create for the human, GetDigits, then a "
                                     "Conference the customer is transferred into"),
    "caller_id_customer": Supported("the Dial's callerId"),
    "hold_audio_url": Supported("the Dial's dialMusic"),
    "ring_timeout_per_destination": Supported("each Dial's timeout"),
    "fallback_on": Supported("the store's advance step stops at an outcome not named"),
    "extension": Supported("the Number's sendDigits"),
    # What the agent-first handoff (agent_first.py) does not carry out.
    "extension@agent_first": Refused("not built for agent first; the default handoff "
                                     "sends it (the Number's sendDigits)"),
    "sip_destination": Supported("a <User> in the Dial, our headers as its sipHeaders"),
    "sip_destination@agent_first": Refused("not built for agent first; the default "
                                           "handoff dials it (a <User>)"),
    "ring_group": Supported("several <Number>s in one Dial, rung at once; the first to "
                            "answer is connected and the rest hung up"),
    "ring_group@agent_first": Refused("not built for agent first; the default handoff "
                                      "rings a group (one Dial)"),
    "ring_group_screening": Supported("the Dial's confirmKey: \"the phone that confirms the "
                                      "key correctly is bridged and all others fail\""),
}
