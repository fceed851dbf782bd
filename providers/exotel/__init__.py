"""Exotel: the applet bridge; the AI leaves first (see `handoff`)."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.exotel.capabilities import CAPABILITIES, CONFORMANCE_EXCLUDES
from providers.exotel.handoff import CALLBACK_KINDS, ExotelProvider
from shared.config import Settings


def configured(settings: Settings) -> bool:
    return bool(settings.exotel_account_sid and settings.exotel_api_key
                and settings.exotel_api_token)


PROVIDER = ProviderSpec(
    name="exotel", handoff=ExotelProvider(), routes="providers.exotel.routes",
    sandbox="providers.exotel.sandbox", capabilities=CAPABILITIES, configured=configured,
    callback_kinds=CALLBACK_KINDS, conformance_excludes=CONFORMANCE_EXCLUDES)
