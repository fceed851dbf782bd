"""Plivo: `calls.transfer` of the customer's leg to our dial-up XML (see `handoff`)."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.plivo.capabilities import CAPABILITIES
from providers.plivo.handoff import CALLBACK_KINDS, PlivoProvider
from shared.config import Settings


def configured(settings: Settings) -> bool:
    return bool(settings.plivo_auth_id and settings.plivo_auth_token)


PROVIDER = ProviderSpec(
    name="plivo", handoff=PlivoProvider(), routes="providers.plivo.routes",
    sandbox="providers.plivo.sandbox", capabilities=CAPABILITIES, configured=configured,
    callback_kinds=CALLBACK_KINDS)
