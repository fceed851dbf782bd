"""`warm-transfer demo`: transfers against the sandbox, one per provider and fate, each
transfer's timeline printed as it happens.

With a `warm-transfer up` already running on the port, the demo runs its transfers on that
stack (so they show in its console); otherwise it starts a stack of its own. `up` tells
where it runs through a small state file (see `write_up_state`), which `request`,
`status` and `numbers` read too.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from celery import Celery

import providers
from sandbox.core import DemoScript
from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from workers.localstack import Stack, running_stack


def _scripts() -> dict[str, DemoScript]:
    """Each registered provider's demo script (its sandbox module's DEMO)."""
    return {spec.name: importlib.import_module(spec.sandbox).DEMO
            for spec in providers.specs()}


# The provider account of the last scenarios: each provider's second sandbox account.
SECOND = "second"


def scenarios() -> list[tuple[str, list[str], dict[str, Any], str]]:
    """(provider, the fate of each destination in order, template policies, what happens),
    every registered provider's in registration order; then each provider's first one
    again, side by side on its two accounts (policies' `provider_account`)."""
    every = [(name, list(fates), policies, what) for name, script in _scripts().items()
             for fates, policies, what in script.scenarios]
    firsts: dict[str, tuple[str, list[str], dict[str, Any], str]] = {}
    for scenario in every:
        firsts.setdefault(scenario[0], scenario)
    for provider, fates, policies, what in list(firsts.values()):
        every.append((provider, fates, policies, f"{what} [default account]"))
        every.append((provider, fates, {**policies, "provider_account": SECOND},
                      f"{what} [account {SECOND}]"))
    return every


CUSTOMER = "+14155550150"
AI_NUMBER = "+14155550151"
OUTBOUND = "+14155550199"

# Names the state file of a running `up` (default: one per port in the temp directory).
STATE_ENV = "WARM_TRANSFER_UP_STATE"


# --- where a running `up` is ----------------------------------------------------------

@dataclass(frozen=True)
class RunningStack:
    """What another process needs to use a running `up`: no provider credentials."""

    pid: int
    web_url: str
    public_base_url: str
    redis_url: str
    celery_broker_url: str
    sandbox_url: str | None
    # What the providers' demo calls need from the stack's environment (e.g. a secret their
    # URLs carry); only written when the stack uses the sandbox.
    demo_env: dict[str, str] = field(default_factory=dict)
    agent_event_queue: str = "agent_events"
    # The toll-fraud guard's home country the stack runs with (requests are checked
    # client-side too, so a `request` against the stack needs the same).
    transfer_home_country: str = ""
    # And the SIP hosts it allows (the sandbox's SIP endpoints).
    transfer_allowed_sip_domains: str = ""


def state_path(port: int) -> Path:
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    return Path(tempfile.gettempdir()) / f"warm-transfer-up-{port}.json"


def write_up_state(stack: Stack, port: int) -> Path:
    """For `up`, once its stack is ready: say where it runs. Remove the file on the way
    out (`remove_up_state`); a stale one is ignored anyway (its pid or health check)."""
    env = stack.env
    running = RunningStack(
        pid=os.getpid(), web_url=stack.web_url, public_base_url=stack.public_base_url,
        redis_url=stack.redis_url,
        celery_broker_url=env.get("CELERY_BROKER_URL") or stack.redis_url,
        sandbox_url=stack.sandbox_url,
        demo_env={name: env.get(name, "") for name in (
            "CREDENTIALS_FILE", *(n for s in _scripts().values() for n in s.settings))}
        if stack.sandbox_url else {},
        agent_event_queue=env.get("AGENT_EVENT_QUEUE") or "agent_events",
        transfer_home_country=env.get("TRANSFER_HOME_COUNTRY", ""),
        transfer_allowed_sip_domains=env.get("TRANSFER_ALLOWED_SIP_DOMAINS", ""))
    path = state_path(port)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    # Owner-only: it names the Redis URL (which may carry a password).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(running), out)
    tmp.replace(path)
    return path


def remove_up_state(port: int) -> None:
    path = state_path(port)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_running_stack(port: int) -> RunningStack | None:
    """The `up` running on this port, or None (no state file, or a stale one)."""
    try:
        data = json.loads(state_path(port).read_text())
        running = RunningStack(**{k: v for k, v in data.items()
                                  if k in RunningStack.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(int(running.pid)):
        return None
    try:
        healthy = requests.get(f"{running.web_url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        healthy = False
    return running if healthy else None


# --- the sandbox, through its control API ----------------------------------------------

class SandboxControl:
    """The sandbox's control API over HTTP (the same for a stack of our own and for one
    that another process runs)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.http.post(f"{self.url}{path}", json=body or {}, timeout=10)
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def set_fate(self, number: str, fate: str) -> None:
        self.http.put(f"{self.url}/_sandbox/fates/{number}", json={"fate": fate},
                      timeout=10).raise_for_status()

    def create_customer_call(self, *, provider: str, status_callback: str,
                             **flow: Any) -> str:
        body = {"to": AI_NUMBER, "from": CUSTOMER, "provider": provider,
                "status_callback": status_callback, **flow}
        return str(self._post("/_sandbox/calls", body)["call_id"])

    def hangup(self, call_id: str) -> None:
        self._post(f"/_sandbox/calls/{call_id}/hangup")

    def disconnect_ai(self, call_id: str) -> None:
        self._post(f"/_sandbox/calls/{call_id}/disconnect-ai")


class EventReader(threading.Thread):
    """Plays the platform: reads `agent.transfer_event` messages off the agent_events queue."""

    def __init__(self, settings: Settings, on_disconnect: Any = None) -> None:
        super().__init__(daemon=True, name="demo-events")
        self.on_disconnect = on_disconnect
        self.app = Celery("demo-platform", broker=settings.celery_broker_url,
                          set_as_current=False)
        self.queue = settings.agent_event_queue
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        with self.app.connection_for_read() as conn:
            q = conn.SimpleQueue(self.queue, no_ack=True)
            while not self.stopped.is_set():
                try:
                    msg = q.get(block=True, timeout=0.2)
                except q.Empty:
                    continue
                _, kwargs, _ = msg.decode()
                event = kwargs["event"]
                with self.lock:
                    self.events.append(event)
                # As a platform does: close the AI's stream when told to.
                if event["type"] == "transfer.disconnect_ai" and self.on_disconnect:
                    self.on_disconnect(event)
            q.close()

    def for_transfer(self, transfer_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("transfer_id") == transfer_id]


def _terminate(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds running_stack, which stops every child


def demo(port: int = 8000, only: list[int] | None = None) -> int:
    """Run the scenarios (all, or the 1-based numbers in `only`)."""
    signal.signal(signal.SIGTERM, _terminate)
    every = scenarios()
    chosen = [(i, every[i - 1]) for i in (only or range(1, len(every) + 1))
              if 1 <= i <= len(every)]
    if not chosen:
        print(f"warm-transfer demo: scenarios are numbered 1 to {len(every)}",
              file=sys.stderr)
        return 2
    try:
        running = find_running_stack(port)
        if running is not None:
            if running.sandbox_url is None:
                raise RuntimeError(
                    f"the `warm-transfer up` on port {port} talks to real providers; the "
                    "demo needs the sandbox (run `up --sandbox`, or the demo on another "
                    "--port)")
            print(f"using the running `warm-transfer up` at {running.web_url} "
                  f"(sandbox {running.sandbox_url})", flush=True)
            return _run(_settings_of(running), running.demo_env, running.public_base_url,
                        running.sandbox_url, chosen)
        with running_stack(port=port, use_sandbox=True, quiet_children=True) as stack:
            assert stack.sandbox_url is not None
            settings = Settings.model_validate({k.lower(): v for k, v in stack.env.items()
                                                if k.lower() in Settings.model_fields})
            return _run(settings, stack.env, stack.public_base_url, stack.sandbox_url, chosen)
    except RuntimeError as exc:
        print(f"warm-transfer demo: {exc}", file=sys.stderr)
        return 1


def _settings_of(running: RunningStack) -> Settings:
    return Settings(redis_url=running.redis_url, celery_broker_url=running.celery_broker_url,
                    public_base_url=running.public_base_url,
                    agent_event_queue=running.agent_event_queue,
                    transfer_home_country=running.transfer_home_country,
                    transfer_allowed_sip_domains=running.transfer_allowed_sip_domains,
                    # The stack's accounts: the client checks a request's account too.
                    credentials_file=running.demo_env.get("CREDENTIALS_FILE", ""))


def _run(settings: Settings, env: Mapping[str, str], public_base_url: str, sandbox_url: str,
         chosen: list[tuple[int, tuple[str, list[str], dict[str, Any], str]]]) -> int:
    store = Store.from_settings(settings)
    # Through the directory: it gives the toll-fraud guard its home country.
    store.set_number("demo-line", OUTBOUND)
    client = TransferClient(settings, store=store)
    sandbox = SandboxControl(sandbox_url)

    scripts = _scripts()

    def close_stream(event: dict[str, Any]) -> None:
        talk = scripts[event["provider"]].talk_seconds
        if talk is not None:
            sandbox.disconnect_ai(event["call_id"])
            threading.Timer(talk + 1, lambda: sandbox.hangup(event["call_id"])).start()

    reader = EventReader(settings, on_disconnect=close_stream)
    reader.start()
    results = []
    for i, (provider, fates, scenario, what) in chosen:
        policies = dict(scenario)
        account = policies.pop("provider_account", None)
        # No long digit runs: the logs and the console would mask them as phone numbers.
        lead = f"demo-{provider}-{i}-{uuid.uuid4().hex[:6]}"
        agents = _destinations(sandbox, i, fates)
        status_url = (f"{public_base_url}/{provider}/{scripts[provider].status_path}"
                      f"?lead_id={lead}")
        flow: dict[str, Any] = {}
        call_flow = scripts[provider].call_flow
        if call_flow is not None:
            query, flow = call_flow(public_base_url, _account_env(env, provider, account))
            status_url += query
        if account:
            # The platform's URLs for a call of that account name it (README "Provider
            # accounts"), and the call is that account's in the sandbox.
            status_url += f"&account={account}"
            flow = {k: f"{v}&account={account}" if isinstance(v, str)
                    and v.startswith(public_base_url) else v for k, v in flow.items()}
            flow["account"] = account
        call_id = sandbox.create_customer_call(provider=provider, status_callback=status_url,
                                               **flow)
        print(f"\n== {i}. {provider}: {what} (lead {lead})", flush=True)
        result = client.connect_to_live_agent({
            "lead_id": lead, "provider": provider, "call_id": call_id,
            **({"provider_account": account} if account else {}),
            "template": {"configurations": {"transfer_numbers": agents, **policies}},
            "lead": {"outbound_number_id": "demo-line"},
            "summary": "Demo customer wants to talk to a person"})
        print(f"   tool result: {result['status']}  {result.get('transfer_id', '')}"
              f"{result.get('error', '')}")
        if result["status"] != "transfer_requested":
            print(f"   {result.get('message', '')}")
            results.append((provider, what, "refused"))
            continue
        outcome = _follow(store, reader, str(result["transfer_id"]))
        results.append((provider, what, outcome))
        sandbox.hangup(call_id)
    reader.stopped.set()
    print("\n== summary")
    for provider, what, outcome in results:
        print(f"   {provider:7} {what:72} -> {outcome}")
    return 0 if all(o not in ("no outcome", "refused") for _, _, o in results) else 1


# A scenario's destination: a fate ("answer-after:1"), a ring group's fates joined by "|"
# (its members rung at once), or "sip:" and a fate (a SIP address at the sandbox's host).
SIP_HOST = "pbx.example.com"


def _destinations(sandbox: SandboxControl, i: int, fates: list[str]) -> list[Any]:
    """The template's transfer_numbers for scenario `i`, their fates set in the sandbox."""
    out: list[Any] = []
    numbers = iter(f"+1415555{100 + 10 * (i % 90) + k:04d}" for k in range(10))
    for k, fate in enumerate(fates):
        if fate.startswith("sip:"):
            address = f"sip:demo-{i}-{k}@{SIP_HOST}"
            sandbox.set_fate(address, fate.removeprefix("sip:"))
            out.append(address)
        elif "|" in fate:
            members = [next(numbers) for _ in fate.split("|")]
            for member, member_fate in zip(members, fate.split("|"), strict=True):
                sandbox.set_fate(member, member_fate)
            out.append({"group": members})
        else:
            out.append(next(numbers))
            sandbox.set_fate(out[-1], fate)
    return out


def _account_env(env: Mapping[str, str], provider: str, account: str | None
                 ) -> Mapping[str, str]:
    """The stack's environment as the demo's call flow reads it, with the account's own
    values (e.g. the secret its URLs carry) over the default account's variables."""
    path = env.get("CREDENTIALS_FILE")
    spec = providers.get(provider)
    if not account or not path or spec is None:
        return env
    entry = json.loads(Path(path).read_text()).get(provider, {}).get(account, {})
    prefix = spec.account.env_prefix
    return {**env, **{f"{prefix}{k.upper()}": str(v) for k, v in entry.items()}}


def _follow(store: Store, reader: EventReader, transfer_id: str, timeout: float = 20.0) -> str:
    shown_timeline = shown_events = 0
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        timeline = store.timeline(transfer_id)
        for entry in timeline[shown_timeline:]:
            state = entry.get("state", "")
            print(f"   {entry['at'][11:23]}  {state:15} {entry['note']}", flush=True)
        shown_timeline = len(timeline)
        events = reader.for_transfer(transfer_id)
        for event in events[shown_events:]:
            detail = event.get("reason") or ""
            print(f"   {event['occurred_at'][11:23]}  event: {event['type']} "
                  f"action={event['action']} {detail}", flush=True)
        shown_events = len(events)
        for event in events:
            if event["type"] in ("transfer.succeeded", "transfer.failed"):
                tried = ", ".join(
                    f"{a['number']} {a['outcome']}"
                    + (f" (member {a['member'] + 1})" if a.get("member") is not None else "")
                    for a in event.get("attempts") or [])
                if tried:
                    print(f"   destinations tried: {tried}", flush=True)
                return f"{event['type']} {event.get('reason') or ''}".strip()
        time.sleep(0.05)
    return "no outcome"
