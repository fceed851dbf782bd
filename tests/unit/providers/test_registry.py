"""The provider registry: every provider has the same parts, and its capability
declarations say what the request contracts enforce."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import providers
from shared import contracts
from shared.config import Settings

PARTS = ("handoff", "callbacks", "markup", "routes", "signature", "sandbox", "capabilities")


def test_the_registry_lists_the_providers_the_contracts_accept() -> None:
    assert providers.names() == contracts.known_providers()
    assert providers.get("nobody") is None
    assert all(providers.get(name).name == name for name in providers.names())  # type: ignore[union-attr]


@pytest.mark.parametrize("name", providers.names())
def test_every_provider_has_the_same_parts(name: str) -> None:
    spec = providers.get(name)
    assert spec is not None
    for part in PARTS:
        importlib.import_module(f"providers.{name}.{part}")
    assert spec.handoff.name == name
    assert importlib.import_module(spec.routes).bp.url_prefix == f"/{name}"
    model = importlib.import_module(spec.sandbox)
    assert hasattr(model, "Model") and model.DEMO.scenarios
    assert spec.callback_kinds, "a provider whose routes send the worker nothing"


# What each provider's package declares (the README's policy table says the same).
CARRIED = {
    "voicemail_detection": {"twilio", "telnyx"},
    "screening": {"twilio", "plivo", "telnyx"},
    "caller_id_customer": {"twilio", "plivo", "telnyx"},
    "hold_audio_url": {"twilio", "plivo", "telnyx"},
    "ring_timeout_per_destination": {"twilio", "plivo", "telnyx"},
    "fallback_on": {"twilio", "plivo", "telnyx"},
    "extension": {"twilio", "plivo", "telnyx"},
    "sip_destination": {"twilio", "plivo", "telnyx"},
    "ring_group": {"twilio", "plivo", "telnyx"},
    "ring_group_screening": {"plivo"},
    # A no-op on twilio and telnyx: their one handoff reaches the human first.
    "handoff_agent_first": {"twilio", "plivo", "telnyx"},
}
HINTS = {("extension", "exotel"): "not built",
         ("sip_destination", "exotel"): "its Connect applet dials phone numbers only",
         ("ring_group", "exotel"): "its Connect applet rings a list in order",
         ("ring_group_screening", "twilio"): "not built: a group member's leg is gated by "
                                             "/twilio/member, not by the screening prompt",
         ("ring_group_screening", "telnyx"): "the first member to answer takes the "
                                             "destination before the prompt: one who "
                                             "declines would end the group",
         ("fallback_on", "exotel"): "its Connect applet dials the next number on any "
                                   "unanswered outcome",
         ("voicemail_detection", "plivo"): "its Dial has no machine detection; use handoff "
                                           "'agent_first' (the Call API's machine_detection), "
                                           "or screening: a voicemail cannot press the key"}


@pytest.mark.parametrize("policy", contracts.POLICIES)
@pytest.mark.parametrize("name", providers.names())
def test_each_provider_declares_what_it_carries_out(name: str, policy: str) -> None:
    """None: available; else the hint ('' when there is none). The contracts' refusal
    message is built from it."""
    why = providers.refusal(name, policy)
    refusal = contracts.policy_refusal(name, policy)
    if name in CARRIED[policy]:
        assert why is None and refusal is None
    else:
        assert why == HINTS.get((policy, name), "")
        assert refusal is not None and refusal.endswith(f"is not available on {name}"
                                                        + (f" ({why})" if why else ""))


def test_an_unknown_provider_or_policy() -> None:
    assert providers.refusal("nobody", "screening") == ""
    # Undeclared is refused: a new policy is off until each provider declares it.
    assert providers.refusal("twilio", "no-such-policy") == ""


def test_per_destination_ring_timeouts_are_refused_where_the_contracts_refuse_them() -> None:
    assert [n for n in providers.names()
            if providers.refusal(n, "ring_timeout_per_destination") is not None] == ["exotel"]


def test_configured_reads_each_providers_credentials(settings: Settings) -> None:
    assert all(spec.configured(settings) for spec in providers.specs())
    bare = settings.model_copy(update={"twilio_auth_token": "", "plivo_auth_id": "",
                                       "exotel_api_key": "", "telnyx_api_key": ""})
    assert not any(spec.configured(bare) for spec in providers.specs())


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(out.stdout.split())


def test_the_worker_imports_no_web_app_and_no_sandbox() -> None:
    """Routes and sandbox models are module paths in the registry, imported only by who
    needs them: a worker loads neither Flask nor any provider's sandbox model."""
    loaded = _modules_after("import workers.tasks")
    assert {"flask", "sandbox", "sandbox.core"} & loaded == set()
    assert {f"providers.{n}.{part}" for n in providers.names()
            for part in ("routes", "sandbox")} & loaded == set()


def test_the_web_app_imports_no_sandbox() -> None:
    loaded = _modules_after("from webhooks import create_app\n"
                            "create_app({'public_base_url': 'https://hooks.example.com'})")
    assert {f"providers.{n}.sandbox" for n in providers.names()} & loaded == set()
    assert {"sandbox", "sandbox.core", "workers.demo"} & loaded == set()


def test_a_handoff_refuses_only_what_it_declares() -> None:
    """Plivo's agent-first handoff does not send an extension; elsewhere a handoff carries
    out what its provider does."""
    assert "agent first" in (providers.handoff_refusal("plivo", "agent_first", "extension")
                             or "")
    assert providers.handoff_refusal("twilio", "agent_first", "extension") is None
    assert providers.handoff_refusal("plivo", "default", "extension") is None
    assert providers.handoff_refusal("nobody", "agent_first", "extension") is None
