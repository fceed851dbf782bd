"""What Exotel is served: the Connect applet's "whom to dial", as text ("Dial whom" URL) or
as programmable-connect JSON (the applet's dynamic URL)."""

from __future__ import annotations

import json

from providers.accounts import provider_settings
from providers.exotel.account import ExotelSettings
from shared.config import Settings
from shared.store import Transfer, ring_timeout


def programmable_connect(settings: Settings, exotel_version: str | None) -> bool:
    """Whether this dial-up request comes from the Connect applet's dynamic URL (programmable
    connect), which sends an `Exotel-Version` header and validates a JSON answer against that
    version; the "Dial whom" URL sends no such header and dials the number it reads.
    Source: support.exotel.com/support/solutions/articles/3000096873 (Header: Exotel-Version,
    "Current Version: 1.0"); .../3000088074 (Dial whom: "a URL from where you can get a
    number to be dialed")."""
    fmt = provider_settings(settings, "exotel", ExotelSettings).dial_up_format
    if fmt != "auto":
        return fmt == "json"
    return bool((exotel_version or "").strip())


def dial_up_body(settings: Settings, transfer: Transfer, number: str,
                 programmable: bool) -> tuple[str, str]:
    """What the Connect applet gets from /exotel/dial-up: (body, mimetype).

    Programmable connect: JSON with every fallback destination in order (Exotel's Connect
    dials `destination.numbers` one after another, at once only where the account has
    parallel ringing). The "Dial whom" URL: the one number being dialed, as text; Exotel
    documents "a number", so a list is not relied on there."""
    if not programmable:
        return number, "text/plain"
    numbers = [number]
    listed = transfer.destinations
    if len(listed) > 1 and listed[0] == number:
        numbers = list(listed)
    body = {"destination": {"numbers": numbers},
            "outgoing_phone_number": transfer.outbound_number,
            "max_ringing_duration": ring_timeout(settings, transfer, 0),
            "record": False}
    return json.dumps(body), "application/json"
