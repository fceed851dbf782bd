"""The operations console (/console): what is in flight, what ended and how, one transfer's
timeline. Server-rendered pages plus one small script that polls a JSON endpoint.

Served from what the service keeps: the transfer records and timelines, the deadline
sweep's set (every transfer not yet ended is in it) and the store's index of ended
transfers by end time. Phone numbers are masked as in the logs.

Off (404) unless CONSOLE_TOKEN is set. Logging in with the token sets a signed, expiring,
HttpOnly, SameSite=Strict session cookie (Secure when PUBLIC_BASE_URL is https); the login
form and every form that changes state carry a CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

import providers as registry
from shared.config import Settings
from shared.contracts import FailureReason
from shared.phone import mask, mask_in_text
from shared.store import TERMINAL_STATES, State, Store
from webhooks.deps import deps

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static")

SESSION_COOKIE = "wt_console"
LOGIN_COOKIE = "wt_console_login"
# A login form is good for this long (its CSRF token lives in a cookie that long).
LOGIN_FORM_SECONDS = 900
WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86_400}
# The recent page reads at most this many ended transfers (the newest) per window.
RECENT_LIMIT = 5000
RECENT_SHOWN = 300
# The live page also lists this many transfers that just ended, so one can be seen ending.
JUST_ENDED = 10
# Bridge time histogram buckets (upper bounds, seconds).
BRIDGE_BUCKETS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0)
_TRANSFER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_FIELDS = ("transfer_id", "lead_id", "provider", "account", "state", "attempt",
           "destinations", "started_at", "updated_at", "reason", "event")
# The account of a record without one (the store writes only the others).
DEFAULT_ACCOUNT = "default"

F = TypeVar("F", bound=Callable[..., Any])


# --- authentication -------------------------------------------------------------------

def _key(settings: Settings) -> bytes:
    if settings.console_session_secret:
        return settings.console_session_secret.encode()
    return hmac.new(settings.console_token.encode(), b"warm-transfer console session",
                    hashlib.sha256).digest()


def _serializer(settings: Settings, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_key(settings), salt=salt)


def _token_tag(settings: Settings) -> str:
    # In the session, so that a new token ends the sessions of the old one even with a
    # separate CONSOLE_SESSION_SECRET.
    return hashlib.sha256(b"console-token:" + settings.console_token.encode()).hexdigest()[:16]


def token_matches(settings: Settings, given: str) -> bool:
    """Constant-time comparison with the configured token (never true when it is unset)."""
    expected = settings.console_token.encode()
    return bool(expected) and hmac.compare_digest(given.encode(), expected)


def make_session(settings: Settings) -> str:
    """A new signed session cookie value."""
    return _serializer(settings, "console-session").dumps(
        {"sid": secrets.token_urlsafe(16), "csrf": secrets.token_urlsafe(24),
         "tk": _token_tag(settings)})


@dataclass(frozen=True)
class Session:
    csrf: str


def read_session(settings: Settings, raw: str | None) -> Session | str | None:
    """The session of a cookie value; None when absent or invalid, "expired" when it was
    valid but is older than CONSOLE_SESSION_TTL."""
    if not raw:
        return None
    try:
        data = _serializer(settings, "console-session").loads(
            raw, max_age=settings.console_session_ttl)
    except SignatureExpired:
        return "expired"
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("tk") != _token_tag(settings):
        return None
    return Session(csrf=str(data.get("csrf", "")))


def _secure(settings: Settings) -> bool:
    return settings.public_base_url.lower().startswith("https://")


def _current() -> Session | str | None:
    return read_session(deps().settings, request.cookies.get(SESSION_COOKIE))


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if target and target.startswith("/console/") and not target.startswith("//") \
            and "\\" not in target and "://" not in target:
        return target
    return url_for("console.live")


def login_required(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = _current()
        if isinstance(session, Session):
            return view(*args, **kwargs)
        expired = session == "expired"
        if request.path.startswith("/console/api/"):
            return jsonify({"error": "session expired" if expired else "login required"}), 401
        query = {"next": request.full_path.rstrip("?")}
        if expired:
            query["expired"] = "1"
        return redirect(f"{url_for('console.login')}?{urlencode(query)}", code=303)
    return cast(F, wrapper)


def _check_csrf(expected: str) -> None:
    given = request.form.get("csrf", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        abort(400, "the form expired; reload the page")


@bp.before_request
def _enabled() -> None:
    # Never open by default: no token, no console (not even its login page).
    if not deps().settings.console_token:
        abort(404)


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/login")
def login() -> Response:
    return _login_page()


def _login_page(error: str = "", status: int = 200) -> Response:
    settings = deps().settings
    csrf = secrets.token_urlsafe(24)
    expired = request.args.get("expired") == "1"
    body = render_template("console/login.html", csrf=csrf, error=error, expired=expired,
                           next=_safe_next(request.values.get("next")))
    response = Response(body, status=status, mimetype="text/html")
    response.set_cookie(LOGIN_COOKIE, _serializer(settings, "console-login").dumps(csrf),
                        max_age=LOGIN_FORM_SECONDS, path="/console/login", httponly=True,
                        secure=_secure(settings), samesite="Strict")
    return response


@bp.post("/login")
def login_submit() -> BaseResponse:
    settings = deps().settings
    try:
        expected = _serializer(settings, "console-login").loads(
            request.cookies.get(LOGIN_COOKIE, ""), max_age=LOGIN_FORM_SECONDS)
    except BadSignature:
        expected = ""
    given = request.form.get("csrf", "")
    if not expected or not hmac.compare_digest(given.encode(), str(expected).encode()):
        return _login_page("The login form expired; try again.", 400)
    if not token_matches(settings, request.form.get("token", "")):
        return _login_page("That token is not the console token.", 401)
    response = redirect(_safe_next(request.form.get("next")), code=303)
    response.set_cookie(SESSION_COOKIE, make_session(settings),
                        max_age=settings.console_session_ttl, path="/console", httponly=True,
                        secure=_secure(settings), samesite="Strict")
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@bp.post("/logout")
@login_required
def logout() -> BaseResponse:
    session = _current()
    assert isinstance(session, Session)
    _check_csrf(session.csrf)
    response = redirect(url_for("console.login"), code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console", httponly=True,
                           secure=_secure(deps().settings), samesite="Strict")
    return response


def _render(template: str, **context: Any) -> str:
    session = _current()
    csrf = session.csrf if isinstance(session, Session) else ""
    return render_template(template, session_csrf=csrf, **context)


# --- data -----------------------------------------------------------------------------

def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _records(store: Store, ids: Iterable[str]) -> list[dict[str, str]]:
    """The records of these transfers in one round trip (expired ones left out)."""
    ids = list(ids)
    # Records live in their lead's slot: the leads first, so each record is one read more.
    pipe = store.r.pipeline(transaction=False)
    for tid in ids:
        pipe.get(store.transfer_lead_key(tid))
    leads = pipe.execute()
    pipe = store.r.pipeline(transaction=False)
    for tid, lead in zip(ids, leads, strict=True):
        pipe.hmget(store.record_key(tid, str(lead or "")), list(_FIELDS))
    out = []
    for values in pipe.execute():
        rec = {k: str(v) for k, v in zip(_FIELDS, values, strict=True) if v is not None}
        if rec.get("transfer_id"):
            out.append(rec)
    return out


def _event(rec: Mapping[str, str]) -> dict[str, Any] | None:
    try:
        event = json.loads(rec.get("event") or "null")
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def masked(value: Any) -> Any:
    """Every string inside, with phone numbers masked as in the logs."""
    if isinstance(value, str):
        return mask_in_text(value)
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return value


def _account(rec: Mapping[str, str]) -> str:
    return rec.get("account") or DEFAULT_ACCOUNT


def _destinations(rec: Mapping[str, str]) -> list[str]:
    try:
        return [str(n) for n in json.loads(rec.get("destinations") or "[]")]
    except ValueError:
        return []


def live_transfers(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Transfers in flight, oldest first. Every transfer not yet ended is in the deadline
    sweep's set (ended ones stay in it only until their event is marked sent)."""
    now = time.time() if now is None else now
    ids = [str(x) for x in store.r.zrange(store.DEADLINES, 0, -1)]
    rows: list[dict[str, Any]] = []
    for rec in _records(store, ids):
        if rec.get("state") in TERMINAL_STATES:
            continue
        dests = _destinations(rec)
        attempt = int(rec["attempt"]) if rec.get("attempt", "").isdigit() else 0
        started = _float(rec.get("started_at"))
        rows.append({
            "transfer_id": rec["transfer_id"], "lead_id": mask_in_text(rec.get("lead_id", "")),
            "provider": rec.get("provider", ""), "account": _account(rec),
            "state": rec.get("state", ""),
            "destination": mask(dests[attempt]) if attempt < len(dests) else "",
            "position": attempt + 1, "of": len(dests),
            "started_at": _iso(started) if started else "",
            "elapsed": round(now - started, 1) if started else None,
        })
    rows.sort(key=lambda r: -(r["elapsed"] or 0))
    return rows


def ended_transfers(store: Store, start: float, end: float, limit: int = RECENT_LIMIT
                    ) -> list[dict[str, Any]]:
    """Transfers ended in [start, end], newest first, from the store's index."""
    index = store.ended_between(start, end, limit)
    ended_at = dict(index)
    rows: list[dict[str, Any]] = []
    for rec in _records(store, (tid for tid, _ in index)):
        event = _event(rec) or {}
        started = _float(rec.get("started_at"))
        finished = _parse_iso(event.get("occurred_at")) or _parse_iso(rec.get("updated_at")) \
            or ended_at[rec["transfer_id"]]
        attempts = [a for a in event.get("attempts") or [] if isinstance(a, dict)]
        rows.append({
            "transfer_id": rec["transfer_id"], "lead_id": mask_in_text(rec.get("lead_id", "")),
            "provider": rec.get("provider", ""), "account": _account(rec),
            "outcome": rec.get("state", ""),
            "reason": rec.get("reason", "") if rec.get("state") == State.FAILED else "",
            "ended_at": _iso(finished), "ended_ts": finished,
            "duration": round(finished - started, 2) if started else None,
            "attempts": [{"index": int(a.get("index", 0)), "outcome": str(a.get("outcome")),
                          "number": mask_in_text(str(a.get("number", "")))}
                         for a in attempts],
        })
    rows.sort(key=lambda r: -r["ended_ts"])
    return rows


def _rate(answered: int, total: int) -> str:
    return f"{100 * answered / total:.0f}%" if total else "-"


def _outcomes(counts: Counter[str]) -> dict[str, Any]:
    total = sum(counts.values())
    return {"total": total, "succeeded": counts[State.SUCCEEDED],
            "failed": counts[State.FAILED], "rate": _rate(counts[State.SUCCEEDED], total)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and answer rates per provider, per provider account and per destination
    position."""
    providers: dict[str, Counter[str]] = defaultdict(Counter)
    # An account's name is its provider's: the same name on two providers is two accounts.
    accounts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for row in rows:
        providers[row["provider"]][row["outcome"]] += 1
        accounts[(row["provider"], row["account"])][row["outcome"]] += 1
    by_provider = [{"provider": name, **_outcomes(counts)}
                   for name, counts in sorted(providers.items())]
    by_account = [{"provider": provider, "account": account, **_outcomes(counts)}
                  for (provider, account), counts in sorted(accounts.items())]
    positions: dict[int, Counter[str]] = defaultdict(Counter)
    for row in rows:
        for attempt in row["attempts"]:
            positions[attempt["index"]][attempt["outcome"]] += 1
    by_position = []
    for index, counts in sorted(positions.items()):
        total = sum(counts.values())
        by_position.append({
            "position": index + 1, "total": total, "answered": counts["answered"],
            "rate": _rate(counts["answered"], total),
            "outcomes": ", ".join(f"{k} {v}" for k, v in counts.most_common())})
    reasons = Counter(row["reason"] for row in rows if row["reason"])
    return {"by_provider": by_provider, "by_account": by_account, "by_position": by_position,
            "reasons": reasons.most_common()}


def bridge_chart(durations: list[float], width: int = 640, height: int = 220
                 ) -> dict[str, Any]:
    """The geometry of a bar chart of bridge times (request to customer with the human),
    drawn as SVG by the template."""
    labels = []
    low = 0.0
    for high in BRIDGE_BUCKETS:
        labels.append(f"{low:g}-{high:g}s")
        low = high
    labels.append(f">{BRIDGE_BUCKETS[-1]:g}s")
    counts = [0] * len(labels)
    for d in durations:
        counts[next((i for i, b in enumerate(BRIDGE_BUCKETS) if d <= b), len(BRIDGE_BUCKETS))] += 1
    top, bottom, left = 20, 40, 10
    plot_h = height - top - bottom
    slot = (width - left * 2) / len(labels)
    peak = max(counts) or 1
    bars = []
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        h = round(plot_h * count / peak, 1)
        x = round(left + i * slot + slot * 0.1, 1)
        bars.append({"x": x, "y": round(top + plot_h - h, 1), "w": round(slot * 0.8, 1),
                     "h": h, "label": label, "count": count,
                     "cx": round(x + slot * 0.4, 1)})
    ordered = sorted(durations)

    def pct(p: float) -> str:
        if not ordered:
            return "-"
        return f"{ordered[min(len(ordered) - 1, int(p * len(ordered)))]:.1f}s"

    return {"width": width, "height": height, "bars": bars, "base": top + plot_h,
            "label_y": height - bottom + 16, "count": len(durations),
            "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)}


def transfer_detail(store: Store, transfer_id: str) -> dict[str, Any] | None:
    rec = store.get_transfer(transfer_id)
    if rec is None:
        return None
    event = _event(rec)
    dests = _destinations(rec)
    tried: list[dict[str, str]] = []
    if event and event.get("attempts"):
        tried = [{"position": str(int(a["index"]) + 1), "number": mask_in_text(a["number"]),
                  "outcome": a["outcome"]} for a in event["attempts"]]
    else:
        current, outcomes, _ = store.destinations_tried(transfer_id)
        if current is not None:
            for i, number in enumerate(dests[:current + 1]):
                outcome = outcomes[i] if i < len(outcomes) else (
                    "ringing" if rec.get("state") not in TERMINAL_STATES and i == current
                    else rec.get("reason") or rec.get("state", ""))
                tried.append({"position": str(i + 1), "number": mask(number),
                              "outcome": outcome})
    timeline = []
    start = _float(rec.get("started_at"))
    for entry in store.timeline(transfer_id):
        at = _parse_iso(entry.get("at"))
        timeline.append({"at": str(entry.get("at", "")).replace("T", " ").rstrip("Z"),
                         # The entry's time is in milliseconds: never show "-0.00s".
                         "offset": f"+{max(0.0, at - start):.2f}s"
                         if at is not None and start else "",
                         "state": entry.get("state", ""),
                         "note": mask_in_text(str(entry.get("note", "")))})
    return {
        "transfer_id": transfer_id, "lead_id": mask_in_text(rec.get("lead_id", "")),
        "provider": rec.get("provider", ""), "account": _account(rec),
        "state": rec.get("state", ""), "reason": rec.get("reason", ""),
        "call_id": rec.get("call_id", ""),
        "started_at": _iso(start) if start else "",
        "destinations": [mask(n) for n in dests], "tried": tried, "timeline": timeline,
        "event": json.dumps(masked(event), indent=2) if event else "",
        "event_sent": bool(rec.get("event_sent")),
    }


# --- pages ----------------------------------------------------------------------------

def _just_ended(store: Store, now: float) -> list[dict[str, Any]]:
    return ended_transfers(store, now - 3600, now + 60, JUST_ENDED)


@bp.get("/")
@login_required
def live() -> str:
    store, now = deps().store, time.time()
    return _render("console/live.html", page="live", transfers=live_transfers(store, now),
                   ended=_just_ended(store, now), now=_iso(now))


@bp.get("/api/live")
@login_required
def live_json() -> Response:
    store, now = deps().store, time.time()
    return jsonify({"now": _iso(now), "transfers": live_transfers(store, now),
                    "ended": [{k: v for k, v in row.items() if k != "attempts"}
                              for row in _just_ended(store, now)]})


@bp.get("/recent")
@login_required
def recent() -> str:
    window = request.args.get("window", "1h")
    if window not in WINDOWS:
        window = "1h"
    provider = request.args.get("provider", "")
    account = request.args.get("account", "")
    outcome = request.args.get("outcome", "")
    reason = request.args.get("reason", "")
    now = time.time()
    rows = ended_transfers(deps().store, now - WINDOWS[window], now)
    providers = sorted({r["provider"] for r in rows} | set(registry.names()))
    reasons = sorted({r["reason"] for r in rows if r["reason"]} | {r.value for r in
                                                                  FailureReason})
    accounts = sorted({r["account"] for r in rows} | {DEFAULT_ACCOUNT, account} - {""})
    chosen = [r for r in rows
              if (not provider or r["provider"] == provider)
              and (not account or r["account"] == account)
              and (not outcome or r["outcome"] == outcome)
              and (not reason or r["reason"] == reason)]
    durations = [r["duration"] for r in chosen
                 if r["outcome"] == State.SUCCEEDED and r["duration"] is not None]
    return _render("console/recent.html", page="recent", rows=chosen[:RECENT_SHOWN],
                   total=len(chosen), truncated=len(chosen) > RECENT_SHOWN,
                   stats=summarize(chosen), chart=bridge_chart(durations),
                   windows=list(WINDOWS), window=window, providers=providers,
                   accounts=accounts, f_account=account, reasons=reasons,
                   outcomes=[State.SUCCEEDED.value, State.FAILED.value],
                   f_provider=provider, f_outcome=outcome, f_reason=reason, now=_iso(now),
                   capped=len(rows) >= RECENT_LIMIT)


@bp.get("/transfers/<transfer_id>")
@login_required
def transfer(transfer_id: str) -> str:
    if not _TRANSFER_ID.match(transfer_id):
        abort(404)
    detail = transfer_detail(deps().store, transfer_id)
    if detail is None:
        abort(404)
    return _render("console/transfer.html", page="transfer", t=detail, now=_iso(time.time()))
