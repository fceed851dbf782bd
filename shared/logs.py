"""Structured logs: one JSON object per line, ids bound, phone numbers masked."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from shared.phone import mask_in_text

# LogRecord attributes that are not user-supplied context.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class BoundLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger carrying context (lead_id, transfer_id, ...) into every record."""

    def __init__(self, logger: logging.Logger, context: Mapping[str, Any] | None = None) -> None:
        super().__init__(logger, dict(context or {}))

    def bind(self, **context: Any) -> BoundLogger:
        return BoundLogger(self.logger, {**(self.extra or {}), **context})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]
                ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def get_logger(name: str) -> BoundLogger:
    return BoundLogger(logging.getLogger(name))


# Fields never written, at any depth: secrets, and the summary (the customer's words).
SECRET_KEYS = frozenset({"summary", "token", "auth_token", "api_token", "api_key", "password",
                         "secret", "authorization", "signature", "basic_auth"})


def scrub(value: Any, key: str = "") -> Any:
    """A structured log field made safe: numbers masked in every string at any depth,
    SECRET_KEYS' values replaced."""
    if key.lower() in SECRET_KEYS and value not in (None, ""):
        return "***"
    if isinstance(value, str):
        return mask_in_text(value)
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_in_text(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_in_text(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or value is None:
                continue
            out[key] = scrub(value, key)
        if record.exc_info:
            out["exc"] = mask_in_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines (both processes call this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDKs log request bodies (with phone numbers) at DEBUG/INFO.
    for noisy in ("twilio.http_client", "urllib3", "plivo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
