"""Telnyx: Call Control v2, the human dialed first and bridged (see `handoff`)."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.telnyx.account import ACCOUNT
from providers.telnyx.capabilities import CAPABILITIES
from providers.telnyx.handoff import CALLBACK_KINDS, LEG_FIELDS, TelnyxProvider

PROVIDER = ProviderSpec(
    name="telnyx", handoff=TelnyxProvider(), routes="providers.telnyx.routes",
    sandbox="providers.telnyx.sandbox", capabilities=CAPABILITIES, account=ACCOUNT,
    callback_kinds=CALLBACK_KINDS, leg_fields=LEG_FIELDS)
