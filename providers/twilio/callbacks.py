"""Twilio's part of the state machine that the web app runs: the decisions behind the TwiML
routes, which answer a live call at once. The worker's part (status, conference and
detection callbacks) is `TwilioProvider.handle_callback` in `handoff`.

The routes verify and parse; these functions decide and record. `store` is None while Redis
is down (the answers then come from what our signed URL carries).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from providers.twilio import markup
from shared.config import Settings
from shared.logs import get_logger
from shared.model import TERMINAL_STATES, CallbackKind
from shared.store import Store

log = get_logger("webhooks.twilio")


@dataclass(frozen=True)
class Answer:
    """The TwiML to answer, and the callback to hand to the worker (once), if any."""

    twiml: str
    kind: CallbackKind | None = None
    params: Mapping[str, str] = field(default_factory=dict)


def is_machine(answered_by: str) -> bool:
    return answered_by.startswith("machine") or answered_by == "fax"


def pending(record: Mapping[str, str] | None, readable: bool, attempt: str) -> bool:
    """Whether the leg of `attempt` may still join; unknown (Redis down) counts as yes:
    a human kept out by our outage would be a transfer lost for nothing."""
    if not readable:
        return True
    return (record is not None and record["state"] not in TERMINAL_STATES
            and record.get("attempt", "0") == attempt)


def _best_effort(store: Store | None, transfer_id: str, **fields: str) -> None:
    if store is None:
        return
    try:
        store.set_fields(transfer_id, **fields)
    except redis.RedisError:
        log.warning("could not record on the transfer", extra={"fields": sorted(fields)})


def machine_answered(store: Store | None, transfer_id: str, attempt: str, call_sid: str,
                     answered_by: str) -> Answer:
    """/twilio/screen with a machine's verdict: hang up on it; the worker moves on (the
    leg's "completed" callback says voicemail from the field, the `amd` callback sooner)."""
    _best_effort(store, transfer_id, answered_by=answered_by)
    return Answer(markup.hangup_twiml(), CallbackKind.AMD,
                  {"CallSid": call_sid, "AnsweredBy": answered_by, "attempt": attempt})


def screen(settings: Settings, context: Mapping[str, str], record: Mapping[str, str] | None,
           readable: bool, attempt: str) -> Answer:
    """/twilio/screen: the briefing and the key prompt while the leg may still join."""
    if not context or not pending(record, readable, attempt):
        return Answer(markup.hangup_twiml())
    return Answer(markup.screen_twiml(settings, context, attempt,
                                      (record or {}).get("summary")))


def screen_result(store: Store | None, settings: Settings, context: Mapping[str, str],
                  record: Mapping[str, str] | None, readable: bool,
                  params: Mapping[str, str]) -> Answer:
    """/twilio/screen-result: the screening key joins the human to the conference;
    anything else (or nothing) declines, and their leg is hung up."""
    attempt = params.get("attempt", "0")
    may_join = bool(context) and pending(record, readable, attempt)
    if may_join and params.get("Digits") == context["key"]:
        return Answer(markup.agent_join_twiml(settings, context, attempt))
    if may_join:
        # Read by the leg's "completed" callback, which may come before the worker's task.
        _best_effort(store, context["transfer_id"], declined="1")
    return Answer(markup.goodbye_twiml(), CallbackKind.SCREEN, params)
