"""The producer API: what the agent's `connect_to_live_agent` tool handler calls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import redis
from celery import Celery

from shared.celery_config import TASK_REQUEST, TRANSFERS_QUEUE, make_celery
from shared.config import Settings, get_settings
from shared.contracts import (
    TOOL_DECLARATION,
    ErrorCode,
    RequestError,
    ToolResult,
    TransferRequest,
    parse_request,
    wire_request,
)
from shared.logs import get_logger
from shared.store import State, Store

__all__ = ["TOOL_DECLARATION", "TransferClient", "connect_to_live_agent", "request_payload"]

log = get_logger(__name__)

_MSG_REQUESTED = (
    "The transfer to a human agent has started. Tell the customer you are connecting them "
    "now and stay with them until the transfer completes."
)
_MSG_IN_PROGRESS = (
    "A transfer to a human agent is already under way. Do not request another one; reassure "
    "the customer they are being connected."
)


def request_payload(request: Mapping[str, Any], req: TransferRequest) -> dict[str, Any]:
    """The Celery message's request: the producer's own request (every contract field as it
    was sent, so the worker parses exactly what we accepted) with our transfer id."""
    return {**wire_request(request), "transfer_id": req.transfer_id}


class TransferClient:
    """Validates transfer requests synchronously and enqueues the valid ones."""

    def __init__(self, settings: Settings | None = None, *, store: Store | None = None,
                 celery: Celery | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = store or Store.from_settings(self.settings)
        self._celery = celery

    def account_known(self, provider: str, account: str) -> bool:
        """Whether the provider account has credentials (resolved, cached: see accounts).
        A broken credential source raises accounts.CredentialsUnavailable, a RequestError
        (service_unavailable): the operator's fault, not the request's."""
        from providers import accounts  # here: the registry imports the store

        return accounts.known(self.settings, provider, account)

    def account_full(self, req: TransferRequest) -> bool:
        """The account has its cap of transfers in flight (a quick look: the worker's hold
        is the atomic one, and refuses what slips past this)."""
        from providers import accounts

        cap = accounts.max_concurrent(self.settings, req.provider, req.account)
        return bool(cap) and self.store.account_in_flight(req.provider, req.account) >= cap

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self.settings, "warm_transfer_producer")
        return self._celery

    def connect_to_live_agent(self, request: Mapping[str, Any], *,
                              summary: str | None = None) -> dict[str, Any]:
        return self._connect(request, summary).as_dict()

    def _connect(self, request: Mapping[str, Any], summary: str | None) -> ToolResult:
        if summary is not None and isinstance(request, Mapping):
            request = {**request, "summary": summary}
        try:
            req = parse_request(request, self.store.get_number,
                                allowed_destinations=self.settings.transfer_allowed_destinations,
                                home_country=self.settings.transfer_home_country,
                                allowed_sip_domains=self.settings.transfer_allowed_sip_domains,
                                account_known=self.account_known)
        except RequestError as exc:
            log.info("transfer refused", extra={"error": exc.code.value,
                                                "lead_id": _lead_of(request)})
            return ToolResult.refused(exc.code, exc.detail)
        except redis.RedisError:
            log.exception("redis unavailable while validating",
                          extra={"lead_id": _lead_of(request)})
            return ToolResult.refused(ErrorCode.SERVICE_UNAVAILABLE)

        bound = log.bind(lead_id=req.lead_id, transfer_id=req.transfer_id)
        try:
            if self.account_full(req):
                bound.info("transfer refused", extra={"error": ErrorCode.ACCOUNT_LIMIT.value,
                                                      "account": req.account})
                return ToolResult.refused(ErrorCode.ACCOUNT_LIMIT)
            outcome, detail = self.store.begin(req)
        except RequestError as exc:
            # The account's cap: its credentials' source is broken (logged where it is read).
            bound.info("transfer refused", extra={"error": exc.code.value,
                                                  "account": req.account})
            return ToolResult.refused(exc.code, exc.detail)
        except redis.RedisError:
            bound.exception("redis unavailable while claiming the lead")
            return ToolResult.refused(ErrorCode.SERVICE_UNAVAILABLE)
        if outcome == "busy":
            bound.info("transfer already in progress", extra={"active": detail})
            return ToolResult(status="transfer_in_progress", transfer_id=detail,
                              message=_MSG_IN_PROGRESS)
        if outcome == "duplicate":
            # The same request id again: the same answer, and nothing sent twice.
            return ToolResult(status="transfer_requested", transfer_id=detail,
                              message=_MSG_REQUESTED)

        try:
            self.celery.send_task(TASK_REQUEST, kwargs={"request": request_payload(request, req)},
                                  queue=TRANSFERS_QUEUE, task_id=req.transfer_id)
        except Exception:  # noqa: BLE001 - any publish failure means the request is not accepted
            bound.exception("could not enqueue the transfer")
            self.store.transition(req.transfer_id, State.FAILED, "could not enqueue",
                                  fields={"reason": "service_unavailable"})
            return ToolResult.refused(ErrorCode.SERVICE_UNAVAILABLE)
        bound.info("transfer requested", extra={"provider": req.provider,
                                                "account": req.account})
        return ToolResult(status="transfer_requested", transfer_id=req.transfer_id,
                          message=_MSG_REQUESTED)


def _lead_of(request: Any) -> str | None:
    lead = request.get("lead_id") if isinstance(request, Mapping) else None
    return str(lead) if lead is not None else None


_default: TransferClient | None = None
_default_lock = threading.Lock()


def connect_to_live_agent(request: Mapping[str, Any], *, summary: str | None = None
                          ) -> dict[str, Any]:
    """Validate a transfer request, enqueue it when valid, and return the LLM tool result.

    Settings come from the environment (REDIS_URL, CELERY_BROKER_URL).
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = TransferClient()
    return _default.connect_to_live_agent(request, summary=summary)


logging.getLogger(__name__).addHandler(logging.NullHandler())
