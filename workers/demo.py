"""`warm-transfer demo`: the whole stack against the sandbox, one transfer per provider and
fate, each transfer's timeline printed as it happens."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from celery import Celery

from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from workers.localstack import running_stack

# (provider, the fate of each destination in order, template policies, what happens)
SCENARIOS: list[tuple[str, list[str], dict[str, Any], str]] = [
    ("twilio", ["answer-after:1"], {}, "the human answers"),
    ("twilio", ["busy"], {}, "the human's line is busy"),
    ("twilio", ["decline-after:1", "answer-after:1"], {"screening": True},
     "screening: the first human declines, the second presses 1"),
    ("twilio", ["machine", "answer-after:1"], {"voicemail_detection": True},
     "voicemail on the first line, the second answers"),
    ("plivo", ["answer-after:1"], {}, "the human answers"),
    ("plivo", ["no-answer:2"], {}, "nobody answers; the customer goes back to the AI"),
    ("plivo", ["busy", "answer-after:1"], {}, "the first line is busy, the second answers"),
    ("exotel", ["answer-after:1"], {}, "the human answers; they talk, then hang up"),
    ("exotel", ["busy"], {}, "the human's line is busy"),
]
# Exotel reports the outcome when the call ends: the demo's customer talks this long.
EXOTEL_TALK_SECONDS = 2.0
CUSTOMER = "+14155550150"
AI_NUMBER = "+14155550151"
OUTBOUND = "+14155550199"


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


def demo(port: int = 8000) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return _demo(port)
    except RuntimeError as exc:
        print(f"warm-transfer demo: {exc}", file=sys.stderr)
        return 1


def _demo(port: int) -> int:
    with running_stack(port=port, use_sandbox=True, quiet_children=True) as stack:
        assert stack.sandbox is not None
        settings = Settings.model_validate({k.lower(): v for k, v in stack.env.items()
                                            if k.lower() in Settings.model_fields})
        store = Store.from_settings(settings)
        # Through the directory: it gives the toll-fraud guard its home country.
        store.set_number("demo-line", OUTBOUND)
        client = TransferClient(settings, store=store)
        sandbox = stack.sandbox

        def close_stream(event: dict[str, Any]) -> None:
            if event["provider"] == "exotel":
                sandbox.exotel.ai_disconnected(event["call_id"])
                threading.Timer(EXOTEL_TALK_SECONDS + 1,
                                lambda: sandbox.hangup(event["call_id"])).start()

        reader = EventReader(settings, on_disconnect=close_stream)
        reader.start()
        results = []
        for i, (provider, fates, policies, what) in enumerate(SCENARIOS, start=1):
            lead = f"demo-{provider}-{i}-{int(time.time())}"
            agents = [f"+1415555{100 + 10 * i + k:04d}" for k in range(len(fates))]
            for agent, fate in zip(agents, fates, strict=True):
                stack.sandbox.set_fate(agent, fate)
            status_url = f"{stack.public_base_url}/{provider}/status?lead_id={lead}"
            flow = {}
            if provider == "exotel":
                token = settings.exotel_webhook_token
                status_url += f"&token={token}"
                flow["dial_whom_url"] = f"{stack.public_base_url}/exotel/dial-up?token={token}"
            call_id = stack.sandbox.create_customer_call(
                to=AI_NUMBER, from_=CUSTOMER, provider=provider, status_callback=status_url,
                **flow)
            print(f"\n== {provider}: {what} (lead {lead})", flush=True)
            result = client.connect_to_live_agent({
                "lead_id": lead, "provider": provider, "call_id": call_id,
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
            stack.sandbox.hangup(call_id)
        reader.stopped.set()
        print("\n== summary")
        for provider, what, outcome in results:
            print(f"   {provider:7} {what:58} -> {outcome}")
        return 0 if all(o not in ("no outcome", "refused") for _, _, o in results) else 1


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
                tried = ", ".join(f"{a['number']} {a['outcome']}"
                                  for a in event.get("attempts") or [])
                if tried:
                    print(f"   destinations tried: {tried}", flush=True)
                return f"{event['type']} {event.get('reason') or ''}".strip()
        time.sleep(0.05)
    return "no outcome"
