"""Exotel: the applet bridge; the AI leaves first (see `handoff`)."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.exotel.account import ACCOUNT
from providers.exotel.capabilities import CAPABILITIES, CONFORMANCE_EXCLUDES
from providers.exotel.handoff import CALLBACK_KINDS, ExotelProvider

PROVIDER = ProviderSpec(
    name="exotel", handoff=ExotelProvider(), routes="providers.exotel.routes",
    sandbox="providers.exotel.sandbox", capabilities=CAPABILITIES, account=ACCOUNT,
    callback_kinds=CALLBACK_KINDS, conformance_excludes=CONFORMANCE_EXCLUDES)
