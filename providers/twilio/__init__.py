"""Twilio: the Conference handoff, human first (see `handoff`)."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.twilio.account import ACCOUNT
from providers.twilio.callbacks import LEG_FIELDS
from providers.twilio.capabilities import CAPABILITIES
from providers.twilio.handoff import CALLBACK_KINDS, TwilioProvider, warm_up

PROVIDER = ProviderSpec(
    name="twilio", handoff=TwilioProvider(), routes="providers.twilio.routes",
    sandbox="providers.twilio.sandbox", capabilities=CAPABILITIES, account=ACCOUNT,
    callback_kinds=CALLBACK_KINDS, leg_fields=LEG_FIELDS, warm_up=warm_up)
