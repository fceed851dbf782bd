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

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

import providers
from tests.conformance import driver
from tests.conformance.cases import BAD_SIGNATURES, CASE_NAMES, CASES, SUCCEEDED, Case
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
    assert out.flag is None, f"{where}: transfer:{out.lead} still set"
    twice = {n: k for n, k in out.dialed.items() if k > 1}
    assert not twice, f"{where}: dialed more than once: {twice}"
    # Every destination up to the one that took the call (or the last) was dialed, in
    # the list's order, and none after it.
    last = expected.index if expected.index is not None else len(out.numbers) - 1
    assert [out.dialed[n] for n in out.numbers] == [
        1 if i <= last else 0 for i in range(len(out.numbers))], f"{where}: {out.dialed}"
    if expected.index is not None and event.get("destination_index") is not None:
        assert event["destination_index"] == expected.index, f"{where}: {event}"


def _forged(rule_path: str, marker: str) -> str:
    # No converters in these blueprints today; fill any with the marker.
    path = rule_path
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        path = path[:start] + marker + path[end + 1:]
    return path


@pytest.mark.parametrize("provider", providers.names())
def test_bad_signatures(provider: str, conformance_stack: Services) -> None:
    """Unsigned requests (and a guessed token) to every route of the provider's blueprint:
    403, and nothing enqueued or stored about them."""
    why = _excluded(provider, BAD_SIGNATURES)
    if why is not None:
        pytest.skip(f"{provider} excludes {BAD_SIGNATURES}: {why}")
    app = conformance_stack.web_server.server.app.app  # the _Dispatch's Flask app
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith(f"{provider}.")]
    assert rules, f"{provider}: no routes found in its blueprint"
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

    deps.celery.send_task = spy
    base = conformance_stack.settings.public_base_url
    query = {"transfer_id": marker, "lead_id": marker, "CallSid": marker, "token": "forged"}
    form = {"CallSid": marker, "CallUUID": marker, "CallStatus": "completed",
            "Status": "completed", "DialStatus": "completed", "Digits": "1"}
    body = ('{"data": {"record_type": "event", "event_type": "call.hangup", "id": "%s", '
            '"payload": {"call_control_id": "%s", "hangup_cause": "normal_clearing"}}}'
            % (marker, marker))
    refused: list[str] = []
    try:
        for rule in rules:
            url = base + _forged(rule.rule, marker)
            for method in sorted((rule.methods or set()) - {"OPTIONS"}):
                for kind in ("form", "json"):
                    if method in ("GET", "HEAD") and kind == "json":
                        continue
                    kw: dict[str, Any] = {"params": query, "timeout": 10}
                    if method not in ("GET", "HEAD"):
                        if kind == "form":
                            kw["data"] = form
                        else:
                            kw["data"] = body
                            kw["headers"] = {"Content-Type": "application/json"}
                    resp = requests.request(method, url, **kw)
                    assert resp.status_code == 403, (
                        f"{provider}: {method} {rule.rule} ({kind}) answered "
                        f"{resp.status_code}: {resp.text[:200]}")
                    refused.append(f"{method} {rule.rule}")
    finally:
        deps.celery.send_task = real_send
    assert not sent, f"{provider}: enqueued from forged requests: {sent}"
    assert not conformance_stack.store.r.keys(f"*{marker}*"), "forged requests were stored"
    assert refused


def test_exclusions_name_known_cases_and_say_why() -> None:
    for spec in providers.specs():
        for case, why in spec.conformance_excludes.items():
            assert case in CASE_NAMES, f"{spec.name} excludes unknown case {case!r}"
            assert why.strip(), f"{spec.name} excludes {case} without saying why"
