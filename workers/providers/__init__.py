"""Provider registry: one module per provider, all with the interface in `base`.

Adding a provider means one new module and one line here.
"""

from __future__ import annotations

from workers.providers.base import Provider
from workers.providers.exotel import ExotelProvider
from workers.providers.plivo import PlivoProvider
from workers.providers.twilio import TwilioProvider

_PROVIDERS: dict[str, Provider] = {
    "twilio": TwilioProvider(),
    "plivo": PlivoProvider(),
    "exotel": ExotelProvider(),
}


def warm_up() -> None:
    """Pay the SDKs' lazy first-use costs at worker start, not on a customer's transfer."""
    from workers.providers import twilio

    twilio.warm_up()


def get_provider(name: str) -> Provider | None:
    return _PROVIDERS.get(name)

