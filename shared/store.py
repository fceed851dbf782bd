"""The Redis store: every key the service keeps, its owner and its TTL.

| key                                 | holds                                | owner   | TTL    |
|-------------------------------------|--------------------------------------|---------|--------|
| transfer:{lead}                     | transfer number (the DESIGN flag)    | worker  | flag   |
| {transfer:{lead}}:active            | transfer id holding the lead         | both    | flag   |
| {transfer:{lead}}:record:{tid}      | hash: the transfer record and state  | both    | record |
| {transfer:{lead}}:timeline:{tid}    | list of JSON timeline entries        | both    | record |
| {transfer:{lead}}:lead              | hash: the lead's transfer status     | both    | record |
| {transfer:{lead}}:idem:{request_id} | transfer id claimed by a request id  | both    | record |
| {transfer:{lead}}:delivery:{p}:{t}  | a provider's delivery token, accepted| webhook | 15 min |
| wt:transfer-lead:{tid}              | lead id of a transfer (never changes)| both    | record |
| wt:call:{provider}:{call_id}        | transfer id of a call (customer/leg) | both    | record |
| wt:once:{name}                      | one-shot claims (events sent once)   | worker  | record |
| wt:deadlines                        | zset transfer id -> deadline/outbox  | both    | 2xflag |
| wt:ended                            | zset transfer id -> end (event sent) | worker  | record |
| wt:numbers                          | hash outbound_number_id -> E.164     | operator| none   |
| wt:account:{provider}:{account}     | zset transfer id -> hold expiry      | worker  | 2xflag |

"both" is the producer client and the worker; the number directory is configuration,
edited with `warm-transfer numbers`, and so has no TTL.

All writes that decide a transfer's fate are Lua scripts, so that duplicate, late and
out-of-order callbacks and redelivered tasks see one consistent state.

Redis Cluster: a script may only touch keys of one hash slot, passed in KEYS. Everything a
script touches belongs to one lead, and lives in the slot of the lead's flag: a key with no
braces hashes on its whole name, so `{transfer:abc}:record:tr1` (hash tag `transfer:abc`)
lands in the slot of the flag `transfer:abc`, whose name the DESIGN contract fixes. What
spans leads (the deadline zset, the call index, one-shot claims, the transfer-to-lead index)
is written outside the scripts, in an order that leaves nothing unswept if a process dies
between two writes (see begin()).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared.config import Settings
from shared.contracts import FALLBACK_REASONS, TransferRequest

# Re-exported: the states were defined here before shared.model.
from shared.model import TERMINAL_STATES as TERMINAL_STATES
from shared.model import Advance, AdvanceOutcome, Cause
from shared.model import State as State
from shared.model import Transfer as Transfer
from shared.model import Transition as Transition

# The fields of a destination's leg, cleared when the transfer moves on to the next one;
# a provider adds its own (`ProviderSpec.leg_fields`).
LEG_FIELDS = ("human_picked_up", "declined", "agent_call_sid", "agent_status", "answered_by")


def flag_key(lead_id: str) -> str:
    return f"transfer:{lead_id}"


def hash_part(key: str) -> str:
    """What Redis Cluster hashes a key on: the text between the first `{` and the next `}`
    when that is not empty, else the whole key (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def lead_tag(lead_id: str) -> str:
    """The prefix of a lead's keys: a hash tag that puts them in the slot of the lead's flag
    `transfer:{lead_id}`, which is `{transfer:<lead_id>}` for an ordinary lead id. A lead id
    with its own tag (`a{b}c`: the flag hashes on `b`) gets that tag followed by the flag's
    full name, so that two such leads never share a key. (No tag can hold a `}`: on a
    Cluster, a lead id whose flag hashes on text with a `}`, e.g. `a}b`, gets CROSSSLOT
    errors. Single and Sentinel setups take any lead id.)"""
    flag = flag_key(lead_id)
    part = hash_part(flag)
    return "{" + flag + "}" if part == flag else "{" + part + "}" + flag


def ring_timeout(settings: Settings, transfer: Transfer, attempt: int | str | None = None
                 ) -> int:
    """How long destination `attempt` (default: the current one) of a transfer rings: the
    template's value, else TRANSFER_RING_TIMEOUT."""
    index = None if attempt is None else int(attempt or 0)
    return transfer.ring_timeout(index) or settings.transfer_ring_timeout


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


_BEGIN = """
-- KEYS (one lead's slot): record, timeline, active, lead, idem
-- ARGV: transfer_id, record_json, flag_ttl, record_ttl, now_iso, entry, request_id
local rec = KEYS[1]
local state = redis.call('HGET', rec, 'state')
if state then return {'exists', state} end
if ARGV[7] ~= '' then
  local owner = redis.call('GET', KEYS[5])
  if owner and owner ~= ARGV[1] then return {'duplicate', owner} end
end
local active = redis.call('GET', KEYS[3])
if active and active ~= ARGV[1] then return {'busy', active} end
if ARGV[7] ~= '' then redis.call('SET', KEYS[5], ARGV[1], 'EX', ARGV[4]) end
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', rec, k, v) end
redis.call('HSET', rec, 'state', 'requested', 'created_at', ARGV[5], 'updated_at', ARGV[5])
redis.call('EXPIRE', rec, ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'transfer_id', ARGV[1], 'status', 'requested',
           'call_id', fields['call_id'], 'provider', fields['provider'], 'updated_at', ARGV[5])
redis.call('EXPIRE', KEYS[4], ARGV[4])
return {'created', 'requested'}
"""

_TRANSITION = """
-- KEYS (one lead's slot): record, timeline, lead, active, flag
-- ARGV: transfer_id, to_state, now_iso, entry, terminal, fields_json, record_ttl,
--       (unused), from...
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
if cur == 'succeeded' or cur == 'failed' then return {0, cur} end
if #ARGV > 8 then
  local ok = false
  for i = 9, #ARGV do if ARGV[i] == cur then ok = true end end
  if not ok then return {0, cur} end
end
local fields = cjson.decode(ARGV[6])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[7])
if redis.call('HGET', KEYS[3], 'transfer_id') == ARGV[1] then
  redis.call('HSET', KEYS[3], 'status', ARGV[2], 'updated_at', ARGV[3])
  if fields['reason'] then redis.call('HSET', KEYS[3], 'reason', fields['reason']) end
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
if ARGV[5] == '1' then
  if redis.call('GET', KEYS[4]) == ARGV[1] then
    redis.call('DEL', KEYS[4])
    redis.call('DEL', KEYS[5])
  end
end
return {1, cur}
"""

_SERVE_DIAL_UP = """
-- KEYS (one lead's slot): record, timeline, flag   ARGV: timeline entry, record_ttl
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then return {rec, false} end
local state
for i = 1, #rec, 2 do
  if rec[i] == 'state' then state = rec[i + 1] end
end
local number = redis.call('GET', KEYS[3])
if number and state ~= 'succeeded' and state ~= 'failed' then
  redis.call('HSET', KEYS[1], 'dial_up_served', '1')
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return {rec, number}
"""

_ADVANCE = """
-- KEYS (one lead's slot): record, timeline, flag   ARGV: seen attempt, entry, cause,
--                                                       outcome, room, leg fields...
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'succeeded' or state == 'failed' then return {'final', '', ''} end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
local dests = cjson.decode(redis.call('HGET', KEYS[1], 'destinations') or '[]')
if attempt > tonumber(ARGV[1]) then
  return {'stale', tostring(attempt), dests[attempt + 1] or ''}
end
-- The provider's cause of this destination's outcome (for the terminal event's attempts).
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'cause:' .. tostring(attempt), ARGV[3]) end
if attempt + 1 >= #dests or ARGV[5] ~= '1' then return {'last', tostring(attempt), ''} end
local tried = redis.call('HGET', KEYS[1], 'tried')
redis.call('HSET', KEYS[1], 'tried', (tried and tried ~= '' and (tried .. ',') or '') .. ARGV[4])
attempt = attempt + 1
local number = dests[attempt + 1]
redis.call('HSET', KEYS[1], 'attempt', attempt)
-- What belonged to the destination left behind.
for i = 6, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('SET', KEYS[3], number, 'KEEPTTL')
redis.call('RPUSH', KEYS[2], ARGV[2])
return {'next', tostring(attempt), number}
"""

_CLAIM_DUE = """
-- KEYS: deadlines   ARGV: now, lease_until, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end
return due
"""


_HOLD_SLOT = """
-- KEYS: one account's in-flight zset   ARGV: transfer_id, now, until, cap, ttl
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

_NOTE = """
-- KEYS (one lead's slot): record, timeline   ARGV: entry, record_ttl
if redis.call('HEXISTS', KEYS[1], 'state') == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

_TRIAGE = """
-- KEYS (one lead's slot): record, timeline, lead[, delivery claim]
-- ARGV: record_ttl, late entry, live entry ('' = must go to the worker), attempt (''
--       = any), call sid ('' = any), to state ('' = none), now_iso, transfer_id,
--       from states (comma-separated), the account whose secret verified the callback
--       ('' = any), field name, value, ...
-- KEYS[4] (optional): the delivery's claim, ARGV[#ARGV]: its TTL; a delivery claimed
-- before is a repeat and nothing else is done.
local nargs = #ARGV
if #KEYS > 3 then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[nargs]) then return 'repeat' end
  nargs = nargs - 1
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'enqueue' end
-- Another account's callback changes nothing here, not even the timeline: the worker
-- refuses it (and says so in its log).
if ARGV[10] ~= '' and (redis.call('HGET', KEYS[1], 'account') or 'default') ~= ARGV[10] then
  return 'enqueue'
end
if state == 'succeeded' or state == 'failed' then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  return 'late'
end
if ARGV[3] == '' then return 'enqueue' end
if ARGV[4] ~= '' and (redis.call('HGET', KEYS[1], 'attempt') or '0') ~= ARGV[4] then
  return 'enqueue'
end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'agent_call_sid') ~= ARGV[5] then
  return 'enqueue'
end
for i = 11, nargs - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[6] ~= '' then
  -- A non-terminal step forward, as the worker's transition makes it: only from the
  -- states given (else, as there, the fields are set and nothing is noted).
  if not string.find(',' .. ARGV[9] .. ',', ',' .. state .. ',', 1, true) then
    return 'recorded'
  end
  redis.call('HSET', KEYS[1], 'state', ARGV[6], 'updated_at', ARGV[7])
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  if redis.call('HGET', KEYS[3], 'transfer_id') == ARGV[8] then
    redis.call('HSET', KEYS[3], 'status', ARGV[6], 'updated_at', ARGV[7])
    redis.call('EXPIRE', KEYS[3], ARGV[1])
  end
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 'recorded'
"""


def redis_client(settings: Settings, **overrides: Any) -> Any:
    """The store's client for REDIS_URL: one server, a Sentinel-managed master
    (`redis+sentinel://...`), or a Cluster (REDIS_CLUSTER=1, any node's URL).
    Short timeouts and few retries: a tool call on a live phone call must not hang; a
    failover is ridden out by the callers' own retries (the worker's tasks retry)."""
    options: dict[str, Any] = {
        "decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 2,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2), **overrides}
    sentinel = settings.redis_sentinel
    if sentinel is not None:
        from redis.sentinel import Sentinel

        # The sentinels answer "who is the master"; the client re-asks on every reconnect,
        # so after a failover the next command goes to the new master.
        manager = Sentinel(list(sentinel.hosts), socket_timeout=1,  # type: ignore[no-untyped-call]
                           socket_connect_timeout=1)
        return manager.master_for(sentinel.master, db=sentinel.db,  # type: ignore[no-untyped-call]
                                  password=sentinel.password, **options)
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        options.pop("retry", None)  # the cluster client retries (and follows MOVED) itself
        return RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, health_check_interval=30, **options)


class Replay(Exception):
    """A one-shot claim (a nonce) was already taken."""


class Store:
    """All Redis access of the service. Takes a client built with decode_responses=True."""

    NUMBERS = "wt:numbers"
    DEADLINES = "wt:deadlines"
    ENDED = "wt:ended"
    # A terminal event not marked sent this long after the outcome is sent again.
    OUTBOX_DELAY = 15.0

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self._begin = client.register_script(_BEGIN)
        self._transition = client.register_script(_TRANSITION)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._serve = client.register_script(_SERVE_DIAL_UP)
        self._advance = client.register_script(_ADVANCE)
        self._triage = client.register_script(_TRIAGE)
        self._note = client.register_script(_NOTE)
        self._hold_slot = client.register_script(_HOLD_SLOT)
        # transfer id -> lead id (never changes): saves a read before every transition.
        self._leads: dict[str, str] = {}

    def _remember_lead(self, transfer_id: str, lead_id: str) -> None:
        if len(self._leads) > 50_000:
            self._leads.clear()
        self._leads[transfer_id] = lead_id

    def _lead_of(self, transfer_id: str) -> str | None:
        """The lead of a transfer: its keys live in that lead's slot (see the module doc)."""
        lead = self._leads.get(transfer_id)
        if lead is None:
            lead = cast(str | None, self.r.get(self.transfer_lead_key(transfer_id)))
            if lead is not None:
                self._remember_lead(transfer_id, lead)
        return lead

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(redis_client(settings), settings)

    # keys
    @staticmethod
    def transfer_lead_key(transfer_id: str) -> str:
        return f"wt:transfer-lead:{transfer_id}"

    def record_key(self, transfer_id: str, lead_id: str | None = None) -> str:
        """The record's key; without the lead it is looked up (an unknown transfer gets a key
        that holds nothing)."""
        lead = lead_id if lead_id is not None else self._lead_of(transfer_id)
        return f"{lead_tag(lead or '')}:record:{transfer_id}"

    def timeline_key(self, transfer_id: str, lead_id: str | None = None) -> str:
        lead = lead_id if lead_id is not None else self._lead_of(transfer_id)
        return f"{lead_tag(lead or '')}:timeline:{transfer_id}"

    @staticmethod
    def active_key(lead_id: str) -> str:
        return f"{lead_tag(lead_id)}:active"

    @staticmethod
    def lead_key(lead_id: str) -> str:
        return f"{lead_tag(lead_id)}:lead"

    @staticmethod
    def call_key(provider: str, call_id: str) -> str:
        return f"wt:call:{provider}:{call_id}"

    @staticmethod
    def idem_key(lead_id: str, request_id: str) -> str:
        """Request ids are scoped to their lead: the same id on another lead is another
        request, never a silently dropped one."""
        return f"{lead_tag(lead_id)}:idem:{request_id}"

    # number directory
    def set_number(self, number_id: str, e164: str) -> None:
        self.r.hset(self.NUMBERS, number_id, e164)

    def get_number(self, number_id: str) -> str | None:
        return cast(str | None, self.r.hget(self.NUMBERS, number_id))

    def delete_number(self, number_id: str) -> bool:
        return bool(self.r.hdel(self.NUMBERS, number_id))

    def list_numbers(self) -> dict[str, str]:
        return cast(dict[str, str], self.r.hgetall(self.NUMBERS))

    # the flag (DESIGN contract)
    def set_flag(self, lead_id: str, transfer_number: str) -> bool:
        """SET NX with the flag TTL; True when set now or already holding this number."""
        key = flag_key(lead_id)
        if self.r.set(key, transfer_number, nx=True, ex=self.settings.transfer_flag_ttl):
            return True
        return self.r.get(key) == transfer_number

    def get_flag(self, lead_id: str) -> str | None:
        return cast(str | None, self.r.get(flag_key(lead_id)))

    # transfers
    def begin(self, req: TransferRequest, now: float | None = None) -> tuple[str, str]:
        """Create the transfer record and claim the lead, atomically.

        Returns (outcome, detail): ('created', 'requested'), ('exists', state) when this
        transfer id is already recorded, ('busy', other_transfer_id) when another transfer
        holds the lead, ('duplicate', transfer_id) when the request id was seen before.
        """
        now = time.time() if now is None else now
        record = Transfer(
            transfer_id=req.transfer_id, lead_id=req.lead_id, provider=req.provider,
            call_id=req.call_id, state=State.REQUESTED, transfer_number=req.transfer_number,
            outbound_number=req.outbound_number, summary=req.summary or "",
            request_id=req.request_id or "", started_at=now,
            voicemail_detection=req.voicemail_detection, screening=req.screening,
            screening_key=req.screening_key, screening_timeout=req.screening_timeout,
            destinations=tuple(req.destinations or (req.transfer_number,)),
            ring_timeouts=tuple(req.ring_timeouts),
            caller_number=(req.customer_number or "") if req.caller_id == "customer" else "",
            hold_audio=req.hold_audio,
            # "" when every outcome moves on (the default, and records from before).
            fallback_on=("" if set(req.fallback_on) >= set(FALLBACK_REASONS)
                         else ",".join(req.fallback_on) or "none"),
            # Per destination, the digits sent once it answers (only when there are some).
            extensions=tuple(req.extensions) if any(req.extensions) else (),
            sip_headers=tuple((str(n), str(v)) for n, v in req.sip_headers),
            handoff=req.handoff, account=req.account,
            )
        deadline = now + self.settings.deadline_for(ring_timeout(self.settings, record, 0))
        raw = record.to_hash()
        # The state is set by the script, with the claim (see _BEGIN).
        del raw["state"]
        entry = self._entry(now, State.REQUESTED, "transfer requested")
        tid, lead, ttl = req.transfer_id, req.lead_id, self.settings.transfer_record_ttl
        # Outside the script (other slots), and first: a process dying after this leaves a
        # deadline the sweep finds (an unknown transfer's entry is dropped by `expire`).
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.transfer_lead_key(tid), lead, ex=ttl)
        pipe.zadd(self.DEADLINES, {tid: deadline}, nx=True)
        pipe.expire(self.DEADLINES, self.settings.transfer_flag_ttl * 2)
        pipe.execute()
        self._remember_lead(tid, lead)
        res = self._begin(
            keys=[self.record_key(tid, lead), self.timeline_key(tid, lead),
                  self.active_key(lead), self.lead_key(lead),
                  self.idem_key(lead, req.request_id or "-")],
            args=[tid, json.dumps(raw), self.settings.transfer_flag_ttl, ttl, _iso(now),
                  entry, req.request_id or ""],
        )
        outcome, detail = str(res[0]), str(res[1])
        if outcome in ("created", "exists"):
            # Also on "exists": a redelivered request repairs an index its first run missed.
            self.index_call(req.provider, req.call_id, tid)
        return outcome, detail

    def transition(self, transfer_id: str, to: State, note: str, *,
                   from_states: tuple[State, ...] = (), fields: dict[str, Any] | None = None,
                   now: float | None = None) -> Transition:
        """Move a transfer to `to` if it is in one of `from_states` (any non-terminal when
        empty). A terminal state is final; reaching it clears the flag and the lead claim."""
        now = time.time() if now is None else now
        lead = self._lead_of(transfer_id)
        if lead is None:
            return Transition(False, "")
        str_fields = {k: v if isinstance(v, str) else json.dumps(v)
                      for k, v in (fields or {}).items()}
        terminal = to in TERMINAL_STATES
        res = self._transition(
            keys=[self.record_key(transfer_id, lead), self.timeline_key(transfer_id, lead),
                  self.lead_key(lead), self.active_key(lead), flag_key(lead)],
            args=[transfer_id, to.value, _iso(now), self._entry(now, to, note),
                  "1" if terminal else "0", json.dumps(str_fields),
                  self.settings.transfer_record_ttl, "", *[s.value for s in from_states]],
        )
        moved = Transition(bool(res[0]), str(res[1]))
        if moved.ok and terminal:
            # Stays in the sweep as the outbox: if the event is not marked sent by then, it
            # is resent. (Should this write be lost, the entry's earlier deadline stands.)
            self.r.zadd(self.DEADLINES, {transfer_id: now + self.OUTBOX_DELAY})
        return moved

    def advance_destination(self, transfer_id: str, seen_attempt: int, outcome: str,
                            now: float | None = None, leg_fields: Sequence[str] = (),
                            cause: Cause | None = None) -> Advance:
        """The destination of attempt `seen_attempt` was not reached (`outcome`: busy,
        no_answer, declined...): move to the next one, atomically, recording the outcome.
        Returns (outcome, attempt, number): ('next', k+1, number), ('last', k, '') when none
        is left (or no time), ('stale', current, number) when this attempt was already moved
        past, ('final', -1, '') when the transfer is over. The flag takes the number with
        its TTL kept; the deadline moves to a full ring from now, inside that TTL. The fields
        of the leg left behind (LEG_FIELDS and the provider's `leg_fields`) are cleared.
        `cause`, the provider's own cause of the outcome, is kept with the attempt (unless
        stale or final)."""
        now = time.time() if now is None else now
        lead = self._lead_of(transfer_id)
        if lead is None:
            return Advance(AdvanceOutcome.FINAL, -1, "")
        started_at, rings, fallback_on = self.r.hmget(
            self.record_key(transfer_id, lead), ["started_at", "ring_timeouts", "fallback_on"])
        started = float(started_at or now)
        ring = ring_timeout(self.settings, Transfer.from_hash({"ring_timeouts": str(rings or "")}),
                            seen_attempt + 1)
        deadline = min(now + self.settings.deadline_for(ring),
                       started + self.settings.transfer_flag_ttl - 5)
        # Not enough of the flag's TTL left to ring another destination: this one is last.
        room = deadline - now >= ring
        note = f"destination {seen_attempt + 1} {outcome.replace('_', ' ')}"
        # The template's fallback_on: an outcome it does not name ends the transfer here.
        stop = bool(fallback_on) and outcome not in str(fallback_on).split(",")
        if stop:
            room = False
        res = self._advance(keys=[self.record_key(transfer_id, lead),
                                  self.timeline_key(transfer_id, lead), flag_key(lead)],
                            args=[seen_attempt, self._entry(now, None, note),
                                  cause.to_json() if cause else "",
                                  outcome, "1" if room else "0",
                                  *dict.fromkeys((*LEG_FIELDS, *leg_fields))])
        outcome = AdvanceOutcome(str(res[0]))
        if stop and outcome is AdvanceOutcome.LAST:
            self.note(transfer_id, note + " (not a fallback_on outcome)", now)
        if outcome is AdvanceOutcome.NEXT:
            # Should this write be lost, the earlier deadline fires and `expire` reconciles.
            self.r.zadd(self.DEADLINES, {transfer_id: deadline}, xx=True)
        return Advance(outcome, int(res[1]) if res[1] else -1, str(res[2] or ""))

    def destinations_tried(self, transfer_id: str
                           ) -> tuple[int | None, list[str], list[str]]:
        """(current attempt, the outcomes of the attempts before it, every destination).
        The attempt is None before anything was dialed, and where the provider went down
        the list itself and did not say which destination it reached."""
        attempt, tried, dests, state = self.r.hmget(
            self.record_key(transfer_id), ["attempt", "tried", "destinations", "state"])
        numbers = [str(n) for n in json.loads(dests)] if dests else []
        current: int | None = None
        if state == State.REQUESTED:
            return None, [], numbers  # nothing was dialed yet
        if attempt is None or str(attempt).isdigit():
            current = int(attempt or 0)
        return current, (str(tried).split(",") if tried else []), numbers

    def causes(self, transfer_id: str, count: int) -> list[Cause | None]:
        """The provider's cause of each of the first `count` attempts' outcomes, where
        one was recorded (see advance_destination)."""
        if count <= 0:
            return []
        raw = self.r.hmget(self.record_key(transfer_id), [f"cause:{i}" for i in range(count)])
        return [Cause.from_json(str(r)) if r else None for r in raw]

    def note(self, transfer_id: str, note: str, now: float | None = None) -> None:
        """Add a timeline entry that does not change the state."""
        now = time.time() if now is None else now
        lead = self._lead_of(transfer_id)
        if lead is None:
            return
        # One round trip (it was a read, then a pipeline): a note is the commonest write.
        self._note(keys=[self.record_key(transfer_id, lead), self.timeline_key(transfer_id, lead)],
                   args=[self._entry(now, None, note), self.settings.transfer_record_ttl])

    def triage_callback(self, transfer_id: str, kind: str, live_note: str | None = None, *,
                        attempt: str = "", call_sid: str = "",
                        fields: Mapping[str, str] | None = None,
                        to: State | None = None, from_states: tuple[State, ...] = (),
                        delivery: tuple[str, str] | None = None, delivery_ttl: int = 0,
                        account: str | None = None, now: float | None = None) -> str:
        """One round trip deciding whether a callback can change the transfer, recorded as
        the worker would record it: "late" (the transfer has ended: noted as a late callback
        ignored), "recorded" (`live_note` given, and the record's attempt and agent call sid
        match those given: `fields` set and the note added; with `to`, a non-terminal step
        taken as `transition` takes it, from one of `from_states`, noted only when taken),
        or "enqueue" (the worker decides; also for a transfer not found). With `delivery`
        (provider, token): the delivery is claimed first, in the same round trip, and a
        repeat answers "repeat" and does nothing else (`release_delivery` undoes the claim
        of one that could not be enqueued). With `account` (the one whose secret verified the
        callback): a transfer of another account answers "enqueue" and records nothing (the
        worker refuses it)."""
        now = time.time() if now is None else now
        lead = self._lead_of(transfer_id)
        if lead is None:
            # No slot to claim in: the claim of a transfer we do not know, apart.
            if delivery is not None and not self.claim_once(
                    f"delivery:{delivery[0]}:{delivery[1]}", ttl=delivery_ttl or None):
                return "repeat"
            return "enqueue"
        if to is not None and (to in TERMINAL_STATES or not from_states):
            raise ValueError("a triaged step is non-terminal and names its from-states")
        late = self._entry(now, None, f"late {kind} callback ignored")
        live = self._entry(now, to, live_note) if live_note is not None else ""
        args: list[Any] = [self.settings.transfer_record_ttl, late, live, attempt, call_sid,
                           to.value if to is not None else "", _iso(now), transfer_id,
                           ",".join(s.value for s in from_states), account or ""]
        for name, value in (fields or {}).items():
            args += [name, value]
        keys = [self.record_key(transfer_id, lead), self.timeline_key(transfer_id, lead),
                self.lead_key(lead)]
        if delivery is not None:
            keys.append(self.delivery_key(lead, *delivery))
            args.append(delivery_ttl or self.settings.transfer_record_ttl)
        return str(self._triage(keys=keys, args=args))

    @staticmethod
    def delivery_key(lead_id: str, provider: str, token: str) -> str:
        return f"{lead_tag(lead_id)}:delivery:{provider}:{token}"

    def release_delivery(self, transfer_id: str, provider: str, token: str) -> None:
        """Forget a delivery's claim (triage_callback's): it was not accepted after all."""
        lead = self._lead_of(transfer_id)
        if lead is None:
            self.release_once(f"delivery:{provider}:{token}")
        else:
            self.r.delete(self.delivery_key(lead, provider, token))

    def set_fields(self, transfer_id: str, **fields: str) -> None:
        self.r.hset(self.record_key(transfer_id), mapping=dict(fields.items()))

    def get_record(self, transfer_id: str) -> Transfer | None:
        """The transfer as a typed record (`get_transfer` gives the raw hash)."""
        raw = self.get_transfer(transfer_id)
        return Transfer.from_hash(raw) if raw else None

    def get_transfer(self, transfer_id: str) -> dict[str, str] | None:
        rec = cast(dict[str, str], self.r.hgetall(self.record_key(transfer_id)))
        if rec.get("lead_id"):
            self._remember_lead(transfer_id, rec["lead_id"])
        return rec or None

    def serve_dial_up(self, transfer_id: str, note: str, *, claim: str | None = None,
                      claim_ttl: int | None = None, now: float | None = None
                      ) -> tuple[Transfer | None, str | None]:
        """For a provider fetching whom to dial, in one round trip: take the request's replay
        claim (see claim_once), read the transfer record and the flag (the number), and
        when it is pending mark the dial-up served on the record and its timeline.
        Returns (record or None, number or None); raises Replay if the claim was taken."""
        now = time.time() if now is None else now
        # The claim is its own key (any slot): taken first, as before the record is read.
        # A replay claim (a nonce) lives as long as the records.
        if claim and not self.claim_once(
                claim, ttl=claim_ttl or self.settings.transfer_record_ttl):
            raise Replay(claim)
        lead = self._lead_of(transfer_id)
        if lead is None:
            return None, None
        res = self._serve(keys=[self.record_key(transfer_id, lead),
                                self.timeline_key(transfer_id, lead), flag_key(lead)],
                          args=[self._entry(now, None, note), self.settings.transfer_record_ttl])

        flat, number = res[0], res[1] or None
        rec = {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
        if not rec:
            return None, None
        self._remember_lead(transfer_id, rec["lead_id"])
        return Transfer.from_hash(rec), number

    def timeline(self, transfer_id: str) -> list[dict[str, Any]]:
        raw = cast(list[str], self.r.lrange(self.timeline_key(transfer_id), 0, -1))
        return [json.loads(x) for x in raw]

    def lead_status(self, lead_id: str) -> dict[str, str] | None:
        rec = cast(dict[str, str], self.r.hgetall(self.lead_key(lead_id)))
        return rec or None

    def lead_report(self, lead_id: str) -> dict[str, Any] | None:
        """What operators see of a lead (`GET /transfers/leads/...`, `warm-transfer status`):
        its transfer status, the latest transfer's timeline, and its terminal event once it
        has ended (which destinations were tried, how each ended)."""
        status = self.lead_status(lead_id)
        if status is None:
            return None
        transfer_id = status.get("transfer_id", "")
        event, account = self.r.hmget(self.record_key(transfer_id), ["event", "account"]) \
            if transfer_id else (None, None)
        return {"lead_id": lead_id, **status, "account": account or "default",
                "timeline": self.timeline(transfer_id) if transfer_id else [],
                "event": json.loads(str(event)) if event else None}

    def active_transfer(self, lead_id: str) -> str | None:
        return cast(str | None, self.r.get(self.active_key(lead_id)))

    def index_call(self, provider: str, call_id: str, transfer_id: str) -> None:
        self.r.set(self.call_key(provider, call_id), transfer_id,
                   ex=self.settings.transfer_record_ttl)

    def transfer_for_call(self, provider: str, call_id: str) -> str | None:
        return cast(str | None, self.r.get(self.call_key(provider, call_id)))

    def mark_event_sent(self, transfer_id: str) -> None:
        pipe = self.r.pipeline(transaction=False)  # two slots: no MULTI on a Cluster
        pipe.hset(self.record_key(transfer_id), "event_sent", "1")
        pipe.zrem(self.DEADLINES, transfer_id)
        pipe.execute()
        self.index_ended(transfer_id)

    def index_ended(self, transfer_id: str, now: float | None = None) -> None:
        """The console's index of ended transfers by end time, written in this one place
        (every transfer's terminal event is marked sent exactly here). NX: a resend keeps
        the first time. Entries older than the records they point to are trimmed."""
        now = time.time() if now is None else now
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.ENDED, {transfer_id: now}, nx=True)
        pipe.zremrangebyscore(self.ENDED, "-inf", now - self.settings.transfer_record_ttl)
        pipe.expire(self.ENDED, self.settings.transfer_record_ttl)
        pipe.execute()

    def ended_between(self, start: float, end: float, limit: int) -> list[tuple[str, float]]:
        """Transfers that ended in [start, end], newest first, at most `limit`."""
        rows = cast(list[tuple[str, float]], self.r.zrevrangebyscore(
            self.ENDED, end, start, start=0, num=limit, withscores=True))
        return [(str(m), float(score)) for m, score in rows]

    def claim_once(self, name: str, ttl: int | None = None) -> bool:
        """True the first time `name` is claimed within the TTL (record TTL by default)."""
        return bool(self.r.set(f"wt:once:{name}", "1", nx=True,
                               ex=ttl or self.settings.transfer_record_ttl))

    def claim_for(self, name: str, owner: str, ttl: int | None = None) -> bool:
        """Like claim_once, but the owner (a task id) may claim again: its own retry."""
        key = f"wt:once:{name}"
        if self.r.set(key, owner, nx=True, ex=ttl or self.settings.transfer_record_ttl):
            return True
        return self.r.get(key) == owner

    def release_once(self, name: str) -> None:
        self.r.delete(f"wt:once:{name}")

    # per-account concurrency
    @staticmethod
    def account_key(provider: str, account: str) -> str:
        return f"wt:account:{provider}:{account}"

    def hold_account_slot(self, provider: str, account: str, transfer_id: str, cap: int,
                          now: float | None = None) -> bool:
        """Count the transfer among its account's in-flight ones unless `cap` are already;
        True when held (or held before). A hold lapses after the flag's TTL, past which no
        transfer is still running, so one whose release was lost frees its slot anyway."""
        now = time.time() if now is None else now
        ttl = self.settings.transfer_flag_ttl
        return bool(self._hold_slot(keys=[self.account_key(provider, account)],
                                    args=[transfer_id, now, now + ttl, cap, 2 * ttl]))

    def release_account_slot(self, provider: str, account: str, transfer_id: str) -> None:
        self.r.zrem(self.account_key(provider, account), transfer_id)

    def account_in_flight(self, provider: str, account: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return int(self.r.zcount(self.account_key(provider, account), f"({now}", "+inf"))

    # deadlines
    def forget_deadline(self, transfer_id: str) -> None:
        """Drop the sweep's entry of a transfer that was never created (begin() writes the
        deadline before the record)."""
        self.r.zrem(self.DEADLINES, transfer_id)

    def extend_deadline(self, transfer_id: str, at: float) -> None:
        self.r.zadd(self.DEADLINES, {transfer_id: at}, xx=True)

    def claim_due(self, now: float | None = None, lease: float = 30.0, limit: int = 100
                  ) -> list[str]:
        """Transfers past their deadline, each leased to one caller for `lease` seconds."""
        now = time.time() if now is None else now
        return [str(x) for x in self._claim_due(keys=[self.DEADLINES],
                                                args=[now, now + lease, limit])]

    def ping(self) -> bool:
        return bool(self.r.ping())

    @staticmethod
    def _entry(now: float, state: State | None, note: str) -> str:
        entry: dict[str, Any] = {"at": _iso(now), "note": note}
        if state is not None:
            entry["state"] = state.value
        return json.dumps(entry)
