"""The tasks. Each takes ids and plain values and checks the transfer's state first."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from celery import Task

import providers
from providers import accounts, get_provider
from providers.base import PermanentProviderError, Provider, TransientProviderError
from shared.celery_config import (
    TASK_CALL_STATUS,
    TASK_EXPIRE,
    TASK_PROVIDER_CALLBACK,
    TASK_REQUEST,
)
from shared.config import get_settings
from shared.contracts import (
    ERROR_MESSAGES,
    TRANSFER_ID_FORMAT,
    FailureReason,
    RequestError,
    TransferEvent,
    TransferRequest,
    parse_request,
)
from shared.store import State, Store, Transfer
from workers.celery_app import app
from workers.runtime import Runtime

# Statuses that mean the customer's call is over, across providers.
CALL_ENDED_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled",
                                 "timeout", "cancel", "hangup", "ended"})

_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        settings = get_settings()
        _runtime = Runtime(settings=settings, store=Store.from_settings(settings), celery=app)
    return _runtime


def _provider_step(task: Task, rt: Runtime, provider: Provider, transfer: Transfer,
                   step: Callable[[], None]) -> None:
    """Run one provider step: retry transient errors with backoff, then fail the transfer."""
    try:
        step()
    except TransientProviderError as exc:
        delays = rt.settings.provider_retry_delays
        attempt = task.request.retries
        if attempt < len(delays):
            countdown = delays[attempt]
            if exc.outcome_unknown:
                # The provider may still be acting on the request we gave up waiting for:
                # give it time to finish (and its callbacks time to tell us) before we look.
                countdown = max(countdown, 2 * rt.settings.provider_http_timeout)
            rt.logger(transfer).warning("transient provider error, retrying",
                                        extra={"error": str(exc), "attempt": attempt + 1,
                                               "countdown": countdown})
            raise task.retry(countdown=countdown, max_retries=len(delays)) from exc
        if rt.fail(transfer, FailureReason.PROVIDER_ERROR, f"provider error after retries: {exc}"):
            provider.cleanup(rt, transfer)
    except PermanentProviderError as exc:
        rt.logger(transfer).warning("provider refused", extra={"error": str(exc)})
        if rt.fail(transfer, FailureReason.PROVIDER_ERROR, f"provider refused: {exc}"):
            provider.cleanup(rt, transfer)


def parse_message(rt: Runtime, request: Any, transfer_id: str) -> TransferRequest:
    """The request in a task message, validated again as the client validated it.

    The hours are judged at the moment the request was accepted: our client writes the
    record (with its start time) before it sends the task, so a queue that is slow to drain
    does not turn an accepted transfer away at closing time. A producer that sends the task
    itself has no record yet: judged now.
    """
    record = rt.store.get_record(transfer_id) if TRANSFER_ID_FORMAT.match(transfer_id) \
        else None
    started = record.started_at if record else None
    accepted_at = datetime.fromtimestamp(started, UTC) if started else None
    return parse_request(request, rt.store.get_number, transfer_id=transfer_id,
                         allowed_destinations=rt.settings.transfer_allowed_destinations,
                         home_country=rt.settings.transfer_home_country, now=accepted_at,
                         allowed_sip_domains=rt.settings.transfer_allowed_sip_domains,
                         account_known=lambda p, a: accounts.known(rt.settings, p, a))


@app.task(name=TASK_REQUEST, bind=True)
def transfer_request(self: Task, request: dict[str, Any]) -> None:
    rt = runtime()
    raw_id = request.get("transfer_id") if isinstance(request, Mapping) else None
    transfer_id = raw_id if isinstance(raw_id, str) and raw_id else f"tr_{self.request.id}"
    try:
        req = parse_message(rt, request, transfer_id)
    except RequestError as exc:
        _reject(rt, request, transfer_id, exc.code.value, ERROR_MESSAGES[exc.code])
        return
    log = rt.logger(None, lead_id=req.lead_id, transfer_id=req.transfer_id)
    provider = get_provider(req.provider)
    if provider is None:
        _reject(rt, request, transfer_id, "unsupported_provider",
                f"Transfers on {req.provider} are not available yet.")
        return

    outcome, detail = rt.store.begin(req)
    if outcome == "busy":
        _reject(rt, request, transfer_id, FailureReason.TRANSFER_IN_PROGRESS, None)
        return
    if outcome == "duplicate":
        log.info("request id already used; nothing to do", extra={"owner": detail})
        return
    transfer = rt.store.get_record(req.transfer_id)
    if transfer is None or transfer.state is not State.REQUESTED:
        log.info("transfer already past the request; redelivery ignored",
                 extra={"state": transfer and transfer.state})
        return
    if not rt.store.set_flag(req.lead_id, req.transfer_number):
        rt.fail(transfer, FailureReason.TRANSFER_IN_PROGRESS, "flag held by another transfer")
        return
    cap = accounts.max_concurrent(rt.settings, req.provider, req.account)
    if cap and not rt.store.hold_account_slot(req.provider, req.account, req.transfer_id, cap):
        # Nothing dialed; the terminal transition releases nothing it did not hold.
        rt.fail(transfer, FailureReason.ACCOUNT_LIMIT,
                f"account {req.account} has {cap} transfers in flight")
        return
    if not self.request.retries:
        rt.metrics.inc("warm_transfer_requests", provider=req.provider, account=req.account)

    def start() -> None:
        provider.start(rt, transfer)
        elapsed = rt.seconds_since_start(transfer)
        if elapsed is not None:
            rt.metrics.observe("warm_transfer_provider_call_seconds", elapsed,
                               provider=req.provider)

    _provider_step(self, rt, provider, transfer, start)


def _reject(rt: Runtime, request: Any, transfer_id: str, reason: str, message: str | None
            ) -> None:
    """A request that never became a transfer still gets its one terminal event."""
    raw = request if isinstance(request, Mapping) else {}
    if not rt.store.claim_once(f"rejected:{transfer_id}"):
        return
    lead_id = raw.get("lead_id")
    call_id = raw.get("call_id")
    event = TransferEvent.failed(
        lead_id=str(lead_id) if lead_id is not None else "",
        transfer_id=transfer_id,
        provider=str(raw.get("provider") or ""),
        call_id=str(call_id) if call_id is not None else None,
        reason=reason, message=message)
    rt.logger(None, lead_id=event.lead_id, transfer_id=transfer_id).warning(
        "request rejected by the worker", extra={"reason": reason})
    rt.emit(event)


@app.task(name=TASK_PROVIDER_CALLBACK, bind=True)
def provider_callback(self: Task, provider: str, kind: str, transfer_id: str,
                      params: dict[str, str], call_id: str | None = None,
                      account: str = accounts.DEFAULT) -> None:
    """A callback about one of our transfers: by transfer id, or by the customer's call id
    where the provider's URL cannot carry ours (Exotel's statically configured URLs).
    `account` is the one the webhook was verified as: another account's is ignored."""
    rt = runtime()
    if not transfer_id and call_id:
        transfer_id = rt.store.transfer_for_call(provider, call_id) or ""
    transfer = rt.store.get_record(transfer_id) if transfer_id else None
    spec = providers.get(provider)
    if spec is None or kind not in spec.callback_kinds:
        # A webhook and its worker disagree (or a bug): nothing handles it, so say so loudly.
        rt.logger(None, transfer_id=transfer_id).error(
            "unknown callback kind", extra={"kind": kind, "provider": provider})
        return
    impl = spec.handoff
    if transfer is None:
        rt.logger(None, transfer_id=transfer_id).warning(
            "callback for an unknown transfer", extra={"kind": kind})
        return
    if not _same_account(rt, transfer, account, kind):
        return
    if transfer.final:
        rt.store.note(transfer_id, f"late {kind} callback ignored")
        return
    _provider_step(self, rt, impl, transfer,
                   lambda: impl.handle_callback(rt, transfer, kind, params, self.request.id))


def _same_account(rt: Runtime, transfer: Transfer, account: str, what: str) -> bool:
    """A callback verified with one account's secret acts only on that account's transfers
    (a URL or secret shared by mistake must not let one business steer another's calls)."""
    if transfer.account == account:
        return True
    rt.logger(transfer).warning("callback of another provider account ignored",
                                extra={"kind": what, "callback_account": account})
    rt.store.note(transfer.transfer_id, f"{what} callback of another account ignored")
    return False


@app.task(name=TASK_CALL_STATUS, bind=True)
def call_status(self: Task, provider: str, call_id: str, status: str,
                lead_id: str | None = None, params: dict[str, str] | None = None,
                account: str = accounts.DEFAULT) -> None:
    """The customer's own call changed status (the platform's status callback; its URL
    names the account with `?account=`, the default when absent)."""
    if status.lower() not in CALL_ENDED_STATUSES:
        return
    rt = runtime()
    claim = f"ended:{provider}:{call_id}"
    if not rt.store.claim_once(claim):
        return
    try:
        transfer_id = rt.store.transfer_for_call(provider, call_id)
        transfer = rt.store.get_record(transfer_id) if transfer_id else None
        if transfer is not None and transfer.call_id != call_id:
            transfer = None  # a human leg, not a customer call
        if transfer is not None and not _same_account(rt, transfer, account, "status"):
            rt.store.release_once(claim)  # the right account's own callback still counts
            return
        lead = transfer.lead_id if transfer else lead_id
        if not lead:
            rt.logger(None, provider=provider, call_id=call_id).info(
                "call ended with no known lead; no event")
            return
        flagged = rt.store.get_flag(lead) is not None
        transferred = flagged
        impl = get_provider(provider)
        if transfer is not None and impl is not None:
            if transfer.state is State.SUCCEEDED:
                transferred = True
            elif not transfer.final:
                transferred = impl.customer_call_ended(rt, transfer, params or {})
        rt.emit_call_ended(lead_id=lead, provider=provider, call_id=call_id,
                           transfer_id=transfer.transfer_id if transfer else None,
                           transferred=transferred)
    except Exception:
        rt.store.release_once(claim)  # let the redelivery report it
        raise


@app.task(name=TASK_EXPIRE, bind=True)
def expire(self: Task, transfer_id: str) -> None:
    rt = runtime()
    transfer = rt.store.get_record(transfer_id)
    if transfer is None:
        rt.store.forget_deadline(transfer_id)  # a request that never became a transfer
        return
    if transfer.final:
        rt.resend_unsent(transfer)  # the sweep doubles as the outbox of terminal events
        return
    impl = get_provider(transfer.provider)
    if impl is not None and impl.reconcile(rt, transfer):
        return
    if rt.fail(transfer, FailureReason.TIMEOUT, "no outcome before the deadline") and impl:
        impl.cleanup(rt, transfer)
