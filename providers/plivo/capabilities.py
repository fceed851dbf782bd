"""Which transfer policies Plivo carries out, and how."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import Capability, Refused, Supported

CAPABILITIES: Mapping[str, Capability] = {
    "voicemail_detection": Refused("its Dial has no machine detection; turn on screening "
                                   "instead: a voicemail cannot press the key"),
    "screening": Supported("the Dial's confirmSound and confirmKey"),
    "caller_id_customer": Supported("the Dial's callerId"),
    "hold_audio_url": Supported("the Dial's dialMusic"),
    "ring_timeout_per_destination": Supported("each Dial's timeout"),
    "fallback_on": Supported("the store's advance step stops at an outcome not named"),
    "extension": Supported("the Number's sendDigits"),
}
