"""`warm-transfer demo`: the whole stack against the sandbox, one transfer per provider and
fate, each transfer's timeline printed as it happens."""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import Celery

from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from workers.localstack import running_stack

SCENARIOS = [
    ("twilio", "answer-after:1", "the human answers"),
    ("twilio", "busy", "the human's line is busy"),
    ("plivo", "answer-after:1", "the human answers"),
    ("plivo", "no-answer:2", "nobody answers; the customer goes back to the AI"),
    ("exotel", "answer-after:1", "the human answers; they talk, then hang up"),
    ("exotel", "busy", "the human's line is busy"),
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


def demo(port: int = 8000) -> int:
    with running_stack(port=port, use_sandbox=True, quiet_children=True) as stack:
        assert stack.sandbox is not None
        settings = Settings.model_validate({k.lower(): v for k, v in stack.env.items()
                                            if k.lower() in Settings.model_fields})
        store = Store.from_settings(settings)
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
        for i, (provider, fate, what) in enumerate(SCENARIOS, start=1):
            lead = f"demo-{provider}-{i}-{int(time.time())}"
            agent = f"+1415555011{i}"
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
                "template": {"configurations": {"transfer_number": agent}},
                "lead": {"outbound_number": OUTBOUND},
                "summary": "Demo customer wants to talk to a person"})
            print(f"   tool result: {result['status']}  {result.get('transfer_id', '')}")
            outcome = _follow(store, reader, str(result.get("transfer_id", "")))
            results.append((provider, what, outcome))
            stack.sandbox.hangup(call_id)
        reader.stopped.set()
        print("\n== summary")
        for provider, what, outcome in results:
            print(f"   {provider:7} {what:52} -> {outcome}")
        return 0 if all(o != "no outcome" for _, _, o in results) else 1


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
                return f"{event['type']} {event.get('reason') or ''}".strip()
        time.sleep(0.05)
    return "no outcome"
