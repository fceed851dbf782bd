"""Every registered provider through the same cases, over the real stack and the sandbox
(tests/stack.py). Each case checks the same observable contract (shared DESIGN.md): exactly
one terminal event of the right type and reason, the flag `transfer:{lead_id}` cleared, no
destination dialed twice, and `destination_index` where the provider says it.

The transfer cases run concurrently (they share nothing but the stack); the ones with every
callback duplicated and shuffled run together afterwards, since that setting is the
sandbox's. A provider that cannot show a case declares why in its `ProviderSpec`
(`conformance_excludes`) and the case is skipped with that reason.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

import providers
from tests.conformance import driver
from tests.conformance.cases import (
    BAD_SIGNATURES,
    CASE_NAMES,
    CASES,
    DESTINATION_INDEX,
    SUCCEEDED,
    Case,
)
from tests.stack import Services

CASES_BY_NAME = {c.name: c for c in CASES}
PARAMS = [(p, c.name) for p in providers.names() for c in CASES]


def _excluded(provider: str, case: str) -> str | None:
    spec = providers.get(provider)
    assert spec is not None
    return spec.conformance_excludes.get(case)


@pytest.fixture(scope="module")
def outcomes(conformance_stack: Services, request: pytest.FixtureRequest
             ) -> Iterator[dict[tuple[str, str], driver.Outcome]]:
    """Runs the selected (provider, case) pairs, concurrently, once for the module."""
    wanted = {(item.callspec.params["provider"], item.callspec.params["case"])
              for item in request.session.items
              if item.name.startswith("test_case[") and hasattr(item, "callspec")}
    todo = [(p, CASES_BY_NAME[c]) for p, c in PARAMS
            if (p, c) in wanted and _excluded(p, c) is None]
    sandbox = conformance_stack.sandbox
    results: dict[tuple[str, str], driver.Outcome] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for noisy in (False, True):
            batch = [(p, c) for p, c in todo if c.noisy == noisy]
            if noisy:
                sandbox.repeat_callbacks, sandbox.callback_jitter = 2, 0.4
            try:
                for out in pool.map(lambda pc: driver.run(conformance_stack, *pc), batch):
                    results[(out.provider, out.case.name)] = out
            finally:
                sandbox.repeat_callbacks, sandbox.callback_jitter = 1, 0.0
    yield results
    assert all(w.poll() is None for w in conformance_stack.workers), "a worker process died"


@pytest.mark.parametrize(("provider", "case"), PARAMS)
def test_case(provider: str, case: str, outcomes: dict[tuple[str, str], driver.Outcome]
              ) -> None:
    why = _excluded(provider, case)
    if why is not None:
        pytest.skip(f"{provider} excludes {case}: {why}")
    out = outcomes[(provider, case)]
    expected: Case = out.case
    where = f"{provider}/{case} (lead {out.lead}, transfer {out.transfer_id})"
    assert not out.error, f"{where}: {out.error}"
    assert len(out.terminals) == 1, f"{where}: terminal events {out.terminals}"
    [event] = out.terminals
    assert event["type"] == expected.type, f"{where}: {event}"
    assert event.get("reason") == expected.reason, f"{where}: {event}"
    assert event["provider"] == provider and event["call_id"] == out.call_id
    assert event["action"] == ("end_conversation" if expected.type == SUCCEEDED else "resume")
    if expected.noisy:  # the instrument: the sandbox did repeat them
        assert out.repeated, f"{where}: no callback was delivered twice"
    assert out.flag is None, f"{where}: transfer:{out.lead} still set"
    twice = {n: k for n, k in out.dialed.items() if k > 1}
    assert not twice, f"{where}: dialed more than once: {twice}"
    # Every destination up to the one that took the call (or the last) was dialed, in
    # the list's order, and none after it.
    last = expected.index if expected.index is not None else len(out.numbers) - 1
    assert [out.dialed[n] for n in out.numbers] == [
        1 if i <= last else 0 for i in range(len(out.numbers))], f"{where}: {out.dialed}"
    if expected.index is not None and _excluded(provider, DESTINATION_INDEX) is None:
        assert event.get("destination_index") == expected.index, f"{where}: {event}"


def _forged(rule_path: str, marker: str) -> str:
    # No converters in these blueprints today; fill any with the marker.
    path = rule_path
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        path = path[:start] + marker + path[end + 1:]
    return path


@pytest.mark.parametrize("provider", providers.names())
def test_bad_signatures(provider: str, conformance_stack: Services) -> None:
    """Every route of the provider's blueprint, every method, form and JSON bodies: unsigned,
    then signed as the provider signs but with a wrong key (the sandbox model's `forge`),
    with a guessed URL token either way. Each answers 403; nothing is enqueued or stored."""
    why = _excluded(provider, BAD_SIGNATURES)
    if why is not None:
        pytest.skip(f"{provider} excludes {BAD_SIGNATURES}: {why}")
    app = conformance_stack.web_server.server.app.app  # the _Dispatch's Flask app
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith(f"{provider}.")]
    assert rules, f"{provider}: no routes found in its blueprint"
    model = conformance_stack.sandbox.models[provider]
    marker = f"forged{uuid.uuid4().hex[:12]}"
    deps = app.extensions["warm_transfer"]
    sent: list[Any] = []
    lock = threading.Lock()
    real_send = deps.celery.send_task

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        if marker in repr((args, kwargs)):
            with lock:
                sent.append((name, args, kwargs))
        return real_send(name, *args, **kwargs)

    query = urlencode({"transfer_id": marker, "lead_id": marker, "CallSid": marker,
                       "token": "forged"})
    form = {"CallSid": marker, "CallUUID": marker, "CallStatus": "completed",
            "Status": "completed", "DialStatus": "completed", "Digits": "1"}
    event = json.dumps({"data": {"record_type": "event", "event_type": "call.hangup",
                                 "id": marker, "payload": {"call_control_id": marker,
                                                           "hangup_cause": "normal_clearing"}}})
    refused = 0
    deps.celery.send_task = spy
    try:
        for rule in rules:
            url = f"{conformance_stack.settings.public_base_url}{_forged(rule.rule, marker)}"
            url += f"?{query}"
            for method in sorted((rule.methods or set()) - {"OPTIONS"}):
                bodies: list[tuple[dict[str, str], bytes, dict[str, str]]] = [
                    ({}, b"", {})] if method in ("GET", "HEAD") else [
                    (form, urlencode(form).encode(),
                     {"Content-Type": "application/x-www-form-urlencoded"}),
                    ({}, event.encode(), {"Content-Type": "application/json"})]
                for fields, body, headers in bodies:
                    for signed in (False, True):
                        extra = model.forge(method, url, fields, body) if signed else {}
                        resp = requests.request(method, url, data=body, timeout=10,
                                                headers={**headers, **extra})
                        assert resp.status_code == 403, (
                            f"{provider}: {method} {rule.rule} {headers} signed={signed} "
                            f"answered {resp.status_code}: {resp.text[:200]}")
                        refused += 1
    finally:
        deps.celery.send_task = real_send
    assert not sent, f"{provider}: enqueued from forged requests: {sent}"
    assert not conformance_stack.store.r.keys(f"*{marker}*"), "forged requests were stored"
    assert refused >= len(rules)


def test_exclusions_name_known_cases_and_say_why() -> None:
    for spec in providers.specs():
        for case, why in spec.conformance_excludes.items():
            assert case in CASE_NAMES, f"{spec.name} excludes unknown case {case!r}"
            assert why.strip(), f"{spec.name} excludes {case} without saying why"
