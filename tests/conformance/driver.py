"""Drives one conformance case through the real stack, the way the provider's sandbox model
says its calls go (`DEMO` in `providers/<name>/sandbox.py`: the customer call's flow and
status route, and whether the outcome is known only when the call ends)."""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import providers
from sandbox.core import DemoScript
from tests.conformance.cases import Case
from tests.helpers import fictional_number, make_request, unique_lead
from tests.stack import TERMINAL, Services

OUTBOUND = "+14155550199"
# TransferClient shares one Celery producer: the concurrent cases send one at a time.
_send = threading.Lock()


def script(provider: str) -> DemoScript:
    spec = providers.get(provider)
    assert spec is not None
    demo: DemoScript = importlib.import_module(spec.sandbox).DEMO
    return demo


@dataclass
class Outcome:
    provider: str
    case: Case
    lead: str = ""
    call_id: str = ""
    transfer_id: str = ""
    numbers: list[str] = field(default_factory=list)
    terminals: list[dict[str, Any]] = field(default_factory=list)
    flag: str | None = None
    # How many times the sandbox saw each destination dialed.
    dialed: dict[str, int] = field(default_factory=dict)
    error: str = ""
    # Callbacks about this transfer the sandbox delivered more than once (the same URL and
    # parameters): none unless the case repeats them.
    repeated: int = 0


def dial_count(stack: Services, call_id: str, number: str) -> int:
    """Legs the sandbox placed to `number`: the calls it holds, plus the numbers a flow
    on the customer's call dialed itself (a Connect applet: `flow["tried"]`)."""
    with stack.sandbox.lock:
        legs = sum(1 for c in stack.sandbox.calls.values()
                   if c.to == number and c.sid != call_id)
        customer = stack.sandbox.calls.get(call_id)
        tried = list(customer.flow.get("tried", [])) if customer is not None else []
    return legs + tried.count(number)


def settled(stack: Services, call_id: str, numbers: list[str]) -> bool:
    """Every human leg the sandbox placed for this call has played its fate out (answered
    or ended): a leg among its calls, or the leg a flow on the customer's call dialed
    (`flow["leg2"]`)."""
    with stack.sandbox.lock:
        customer = stack.sandbox.calls.get(call_id)
        flow_leg = customer.flow.get("leg2") if customer is not None else None
        legs = [c.status for c in stack.sandbox.calls.values()
                if c.sid != call_id and c.to in numbers]
    return flow_leg != "ringing" and not any(s in ("queued", "ringing") for s in legs)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def run(stack: Services, provider: str, case: Case) -> Outcome:
    out = Outcome(provider, case)
    try:
        _run(stack, out)
    except Exception as exc:  # reported by the case's test, with the rest of the outcome
        out.error = f"{type(exc).__name__}: {exc}"
    return out


def _run(stack: Services, out: Outcome) -> None:
    demo, case, provider = script(out.provider), out.case, out.provider
    out.lead = lead = unique_lead()
    out.numbers = [fictional_number() for _ in case.fates]
    for number, fate in zip(out.numbers, case.fates, strict=True):
        stack.sandbox.set_fate(number, fate)
    base = stack.settings.public_base_url
    status_url = f"{base}/{provider}/{demo.status_path}?lead_id={lead}"
    flow: dict[str, Any] = {}
    if demo.call_flow is not None:
        env = {name: str(getattr(stack.settings, name.lower())) for name in demo.settings}
        query, flow = demo.call_flow(base, env)
        status_url += query
    out.call_id = call_id = stack.sandbox.create_customer_call(
        to="+14155550150", from_="+14155550151", provider=provider,
        status_callback=status_url, **flow)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, provider=provider,
                           summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": out.numbers}
    with _send:
        result = stack.client.connect_to_live_agent(request)
    assert result["status"] == "transfer_requested", result
    out.transfer_id = tid = str(result["transfer_id"])

    first = out.numbers[0]
    if case.hang_up_while_ringing:
        wait_for(lambda: dial_count(stack, call_id, first) >= 1, "the human's leg dialed")
        stack.sandbox.hangup(call_id)
    elif demo.talk_seconds is not None:
        # The outcome is known when the call ends (the stack's platform closes the AI's
        # stream when told): the human is dialed, the customer talks a while (the fates
        # play out), then hangs up.
        wait_for(lambda: dial_count(stack, call_id, first) >= 1, "the human's leg dialed")
        wait_for(lambda: settled(stack, call_id, out.numbers), "the human played out their fate")
        time.sleep(demo.talk_seconds)
        stack.sandbox.hangup(call_id)
    stack.terminal(tid, timeout=30)
    # The conversation ends (with the human, or with the AI): a last round of callbacks,
    # which must not make a second outcome. call.ended is the barrier.
    stack.sandbox.hangup(call_id)
    stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended", 20)
    time.sleep(0.5)  # late duplicates still in flight
    out.terminals = stack.events.matching(
        lambda e: e["transfer_id"] == tid and e["type"] in TERMINAL)
    out.flag = stack.store.get_flag(lead)
    out.dialed = {n: dial_count(stack, call_id, n) for n in out.numbers}
    with stack.sandbox.lock:
        sent = Counter((d.url, repr(sorted(d.params.items()))) for d in stack.sandbox.deliveries
                       if any(k in d.url or k in repr(d.params) for k in (lead, tid, call_id)))
    out.repeated = sum(1 for n in sent.values() if n > 1)
