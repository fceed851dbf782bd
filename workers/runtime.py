"""What tasks and provider modules share in a worker process: settings, store, event sender."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from shared.config import Settings
from shared.contracts import Action, Attempt, EventType, TransferEvent
from shared.logs import BoundLogger, get_logger
from shared.metrics import Metrics
from shared.phone import mask
from shared.store import State, Store, Transfer

log = get_logger("workers")


@dataclass
class Runtime:
    settings: Settings
    store: Store
    celery: Celery
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.store.r)

    def seconds_since_start(self, transfer: Transfer) -> float | None:
        return max(0.0, time.time() - transfer.started_at) if transfer.started_at else None

    def logger(self, transfer: Transfer | None = None, **extra: Any) -> BoundLogger:
        if transfer is not None:
            extra = {"lead_id": transfer.lead_id, "transfer_id": transfer.transfer_id,
                     "provider": transfer.provider, **extra}
        return log.bind(**extra)

    def emit(self, event: TransferEvent) -> None:
        """Send one event to the platform's task (`agent.transfer_event`)."""
        self.celery.send_task(self.settings.agent_event_task, kwargs={"event": event.as_dict()},
                              queue=self.settings.agent_event_queue)
        self.logger(None, lead_id=event.lead_id, transfer_id=event.transfer_id).info(
            "event sent", extra={"event_type": event.type.value, "reason": event.reason})

    def attempts(self, transfer_id: str, last_outcome: str
                 ) -> tuple[int | None, list[Attempt]]:
        """The destination being tried now, and every one tried so far with its outcome
        (the current one's is `last_outcome`); (None, []) when the provider did not say."""
        current, outcomes, numbers = self.store.destinations_tried(transfer_id)
        if current is None:
            return None, []
        # Where the provider tried them itself (Exotel's list), only the last is known.
        outcomes = [*(outcomes + ["not_answered"] * current)[:current], last_outcome]
        causes = self.store.causes(transfer_id, len(outcomes))
        return current, [Attempt(index=i, number=mask(numbers[i]), outcome=outcome,
                                 sip_code=cause.sip_code if cause else None,
                                 provider_cause=cause.provider_cause if cause else None)
                         for i, (outcome, cause) in enumerate(zip(outcomes, causes,
                                                                  strict=True))
                         if i < len(numbers)]

    def succeed(self, transfer: Transfer, note: str, *,
                from_states: tuple[State, ...]) -> bool:
        index, attempts = self.attempts(transfer.transfer_id, "answered")
        # A ring group's member that answered, where the provider said (record "member").
        fresh = self.store.get_record(transfer.transfer_id) or transfer
        raw = fresh.extra.get("member", "")
        member = int(raw) if raw.isdigit() else None
        if member is not None and attempts:
            attempts[-1] = attempts[-1].model_copy(update={"member": member})
        event = TransferEvent.succeeded(lead_id=transfer.lead_id,
                                        transfer_id=transfer.transfer_id,
                                        provider=transfer.provider,
                                        call_id=transfer.call_id, destination_index=index,
                                        attempts=attempts or None,
                                        destination_member=member)
        return self._finish(transfer, State.SUCCEEDED, note, event, from_states)

    def fail(self, transfer: Transfer, reason: str, note: str, *,
             from_states: tuple[State, ...] = ()) -> bool:
        _, attempts = self.attempts(transfer.transfer_id, reason)
        # The cause of the outcome that ended it: the last destination's, where it was its.
        last = attempts[-1] if attempts and attempts[-1].outcome == reason else None
        event = TransferEvent.failed(lead_id=transfer.lead_id,
                                     transfer_id=transfer.transfer_id,
                                     provider=transfer.provider,
                                     call_id=transfer.call_id, reason=reason,
                                     attempts=attempts or None,
                                     sip_code=last.sip_code if last else None,
                                     provider_cause=last.provider_cause if last else None)
        return self._finish(transfer, State.FAILED, note, event, from_states, reason=reason)

    def _finish(self, transfer: Transfer, state: State, note: str,
                event: TransferEvent, from_states: tuple[State, ...],
                reason: str | None = None) -> bool:
        """The one way a transfer ends: an atomic terminal transition, then its one event."""
        fields: dict[str, Any] = {"event": json.dumps(event.as_dict())}
        if reason:
            fields["reason"] = reason
        moved = self.store.transition(transfer.transfer_id, state, note,
                                      from_states=from_states, fields=fields)
        if not moved.ok:
            self.logger(transfer).info("outcome ignored", extra={
                "wanted": state.value, "current": moved.previous, "note": note})
            return False
        provider = transfer.provider
        account = transfer.account
        # Every terminal path comes here: the account's in-flight count lets go of it.
        self.store.release_account_slot(provider, account, transfer.transfer_id)
        self.metrics.inc("warm_transfer_transfers", provider=provider, account=account,
                         outcome=state.value, reason=reason or "")
        for attempt in event.attempts or ():
            # Which destinations of a list take calls, and which keep failing.
            self.metrics.inc("warm_transfer_destination_attempts", provider=provider,
                             position=str(attempt.index), outcome=attempt.outcome)
        elapsed = self.seconds_since_start(transfer)
        if state is State.SUCCEEDED and elapsed is not None:
            self.metrics.observe("warm_transfer_bridge_seconds", elapsed, provider=provider)
        self.send_terminal_event(transfer.transfer_id, event.as_dict())
        return True

    def send_terminal_event(self, transfer_id: str, event: dict[str, Any]) -> bool:
        """Send a stored terminal event unless another sender holds it. If sending fails,
        the deadline sweep finds the event unsent and calls this again (same event_id)."""
        if not self.store.claim_once(f"send:{transfer_id}", ttl=int(self.store.OUTBOX_DELAY)):
            return False
        self.emit(TransferEvent.model_validate(event))
        self.store.mark_event_sent(transfer_id)
        return True

    def resend_unsent(self, transfer: Transfer) -> bool:
        """For a finished transfer: send its terminal event if it never went out."""
        if transfer.extra.get("event_sent") or not transfer.extra.get("event"):
            self.store.mark_event_sent(transfer.transfer_id)
            return False
        self.logger(transfer).warning("terminal event was not sent; sending it now")
        return self.send_terminal_event(transfer.transfer_id, json.loads(transfer.extra["event"]))

    def emit_disconnect(self, transfer: Transfer) -> None:
        """The AI must leave the call now (or has been taken off it) for the transfer."""
        self.emit(TransferEvent(type=EventType.DISCONNECT_AI, lead_id=transfer.lead_id,
                                transfer_id=transfer.transfer_id,
                                provider=transfer.provider, call_id=transfer.call_id,
                                action=Action.DISCONNECT))

    def emit_call_ended(self, *, lead_id: str, provider: str, call_id: str,
                        transfer_id: str | None, transferred: bool) -> None:
        self.emit(TransferEvent(type=EventType.CALL_ENDED, lead_id=lead_id,
                                transfer_id=transfer_id, provider=provider, call_id=call_id,
                                transferred=transferred))
