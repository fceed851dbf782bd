"""Task arguments as Celery's logs and Flower show them: ids kept, everything else hidden.

Celery writes a task's `argsrepr`/`kwargsrepr` headers into the worker's "received" and
"succeeded" lines and into the task events Flower displays. By default they are the
arguments' repr: the request's numbers and the summary, the callbacks' `From`/`Called`.
`before_task_publish` rewrites both headers for every task this process sends (our client,
the webhooks, the workers' own follow-ups and events), before the message leaves. The
message body, which the task runs on, is untouched. Connected by importing this module
(shared.celery_config does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery.signals import before_task_publish

from shared.phone import mask_in_text

# Keys whose values are identifiers or outcomes, not personal data: kept (phone numbers in
# them still masked). Every other string is replaced.
SHOWN_KEYS = frozenset({
    "lead_id", "transfer_id", "request_id", "event_id", "call_id", "provider", "kind",
    "type", "reason", "action", "status", "state", "transferred", "destination_index",
    "index", "outcome", "occurred_at", "attempt", "CallSid", "CallUUID", "CallStatus",
    "DialStatus", "DialBLegStatus", "DialBLegUUID", "ConferenceSid", "StatusCallbackEvent",
    "AnsweredBy", "Event", "HangupCause", "Direction", "ParentCallSid", "RequestUUID",
    "Digits", "ALegUUID", "CallDuration", "Duration",
})
HIDDEN = "***"
_MAX_SHOWN = 100
# Celery's cap on argsrepr/kwargsrepr (celery/app/amqp.py, AMQP.argsrepr_maxsize).
MAX_REPR = 1024


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of `value` fit for logs: containers kept, strings kept only under SHOWN_KEYS
    (masked and capped), every other string replaced by HIDDEN."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        return mask_in_text(value[:_MAX_SHOWN]) if key in SHOWN_KEYS else HIDDEN
    if value is None or isinstance(value, bool | int | float):
        return value
    return HIDDEN


def redacted_repr(value: Any) -> str:
    """The header's text: the redacted value's repr, capped as Celery caps it. `repr`, not
    Celery's `saferepr` (a pure-Python streaming repr, ~30 % of a webhook's CPU in the
    profile): what `redact` returns holds only containers, short strings, numbers, None."""
    text = repr(redact(value))
    return text if len(text) <= MAX_REPR else text[:MAX_REPR - 3] + "..."


def redact_task_arguments(body: Any = None, headers: dict[str, Any] | None = None,
                          **_: Any) -> None:
    # Protocol 2 (Celery's default): body is (args, kwargs, embed) and the reprs are headers.
    if headers is None or "kwargsrepr" not in headers or not isinstance(body, tuple | list):
        return
    args, kwargs = (body[0], body[1]) if len(body) >= 2 else ((), {})
    # Never empty: Celery falls back to the real repr when the header is empty.
    headers["argsrepr"] = redacted_repr(args or [])
    headers["kwargsrepr"] = redacted_repr(kwargs or {})


before_task_publish.connect(redact_task_arguments, weak=False,
                            dispatch_uid="warm_transfer.redact_task_arguments")
