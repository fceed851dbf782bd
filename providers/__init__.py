"""The provider registry: one package per provider (see `providers.base`), one line here.

Everything else (the tasks, the web app, the sandbox, the local stack, the CLI, the demo,
the request contracts) reads this registry and names no provider.
"""

from __future__ import annotations

from providers import exotel, plivo, telnyx, twilio
from providers.base import Provider, ProviderSpec

REGISTRY: dict[str, ProviderSpec] = {p.name: p for p in (
    twilio.PROVIDER,
    plivo.PROVIDER,
    exotel.PROVIDER,
    telnyx.PROVIDER,
)}


def names() -> tuple[str, ...]:
    """The registered providers' names, in registration order."""
    return tuple(REGISTRY)


def get(name: str) -> ProviderSpec | None:
    return REGISTRY.get(name)


def specs() -> tuple[ProviderSpec, ...]:
    return tuple(REGISTRY.values())


def get_provider(name: str) -> Provider | None:
    """The handoff of provider `name` (what the tasks call)."""
    spec = REGISTRY.get(name)
    return spec.handoff if spec else None


def refusal(provider: str, policy: str) -> str | None:
    """Why `provider` cannot carry out `policy` (a request field such as "screening"):
    None when it can, "" when it cannot and has nothing more to say, else the hint (e.g.
    what to use instead). An unknown provider refuses every policy."""
    spec = REGISTRY.get(provider)
    if spec is None:
        return ""
    return spec.refusal(policy)


def warm_up() -> None:
    """Pay the SDKs' lazy first-use costs at worker start, not on a customer's transfer."""
    for spec in REGISTRY.values():
        if spec.warm_up is not None:
            spec.warm_up()


def handoff_refusal(provider: str, handoff: str, policy: str) -> str | None:
    """Why `provider`'s handoff `handoff` (e.g. "agent_first") cannot carry out `policy`
    when the provider declares so (`"policy@handoff"` in its capabilities), else None: a
    handoff declaring nothing carries out what the provider does."""
    spec = REGISTRY.get(provider)
    capability = spec.capabilities.get(f"{policy}@{handoff}") if spec else None
    if capability is None:
        return None
    return spec.refusal(f"{policy}@{handoff}") if spec else None
