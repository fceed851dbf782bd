"""Plivo: `calls.transfer` of the customer's leg to our dial-up XML (see `handoff`)."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.plivo.account import ACCOUNT
from providers.plivo.capabilities import CAPABILITIES
from providers.plivo.handoff import CALLBACK_KINDS, PlivoProvider

PROVIDER = ProviderSpec(
    name="plivo", handoff=PlivoProvider(), routes="providers.plivo.routes",
    sandbox="providers.plivo.sandbox", capabilities=CAPABILITIES, account=ACCOUNT,
    callback_kinds=CALLBACK_KINDS)
