"""Metrics kept in Redis, so that every process (gunicorn workers, Celery workers on any host)
adds to the same numbers and one scrape of /metrics sees them all.

Counters and histograms live in one hash, `wt:metrics` (its TTL is refreshed on every
write, so an idle deployment's numbers eventually reset, which Prometheus handles). Each
process adds up its own increments in memory and writes them every FLUSH_SECONDS from a
background thread: a request never waits on a metrics write.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger(__name__)

KEY = "wt:metrics"
TTL = 7 * 86_400
FLUSH_SECONDS = 0.5
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    # `account`: a provider account's name, from the configuration (a request naming one
    # without credentials is refused), so the label's values stay few.
    "warm_transfer_requests": ("Transfer requests accepted", ("provider", "account")),
    "warm_transfer_transfers": ("Transfers ended, by outcome and reason",
                                ("provider", "account", "outcome", "reason")),
    "warm_transfer_webhook_requests": ("Webhook requests by route and status",
                                       ("route", "status")),
    "warm_transfer_signature_failures": ("Provider requests refused for their signature",
                                         ("provider",)),
    "warm_transfer_destination_attempts": (
        "Destinations tried by ended transfers, by position in the template's list and how "
        "each ended", ("provider", "position", "outcome")),
}
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "warm_transfer_provider_call_seconds": (
        "From the transfer request to the provider handoff call having been made",
        ("provider",)),
    "warm_transfer_bridge_seconds": (
        "From the transfer request to the customer being with the human", ("provider",)),
}


def _labels(names: Iterable[str], values: Mapping[str, str]) -> str:
    return ",".join(f"{n}={values.get(n, '')}" for n in names)


class Metrics:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._lock = threading.Lock()
        self._counts: dict[str, int] = defaultdict(int)
        self._sums: dict[str, float] = defaultdict(float)
        self._flusher: threading.Thread | None = None
        self._at_exit = False

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        _, names = COUNTERS[name]
        with self._lock:
            self._counts[f"{name}|{_labels(names, labels)}"] += amount
        self._ensure_flusher()

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        _, names = HISTOGRAMS[name]
        base = f"{name}|{_labels(names, labels)}"
        bucket = next((b for b in BUCKETS if seconds <= b), float("inf"))
        with self._lock:
            self._counts[f"{base}|le={bucket}"] += 1
            self._counts[f"{base}|count"] += 1
            self._sums[f"{base}|sum"] += seconds
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            with self._lock:
                if self._flusher is None or not self._flusher.is_alive():
                    # Started on first use, so in the process that uses it (after a fork).
                    self._flusher = threading.Thread(target=self._run, daemon=True,
                                                     name="metrics-flush")
                    self._flusher.start()
                    if not self._at_exit:
                        self._at_exit = True
                        atexit.register(self.flush, quiet=True)

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self, quiet: bool = False) -> None:
        """Write this process's increments to Redis now. `quiet` (at interpreter exit, when a
        log handler's stream may already be closed): a failed write is not logged."""
        with self._lock:
            counts, sums = self._counts, self._sums
            self._counts, self._sums = defaultdict(int), defaultdict(float)
        if not counts and not sums:
            return
        # Metrics must never break what they describe: a failed write is dropped.
        try:
            pipe = self.r.pipeline(transaction=False)
            for field, amount in counts.items():
                pipe.hincrby(KEY, field, amount)
            for field, total in sums.items():
                pipe.hincrbyfloat(KEY, field, total)
            pipe.expire(KEY, TTL)
            pipe.execute()
        except redis.RedisError:
            if not quiet:
                log.warning("metrics not recorded: redis unavailable")

    def render(self) -> bytes:
        self.flush()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.r))
        return bytes(generate_latest(registry))


class _Collector:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def collect(self) -> Iterator[Metric]:
        raw: dict[Any, Any] = self.r.hgetall(KEY)
        data = {(k.decode() if isinstance(k, bytes) else k):
                (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
        for name, (doc, names) in COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=list(names))
            for field, value in data.items():
                metric, _, labels = field.partition("|")
                if metric == name:
                    family.add_metric(_values(labels), float(value))
            yield family
        for name, (doc, names) in HISTOGRAMS.items():
            hist = HistogramMetricFamily(name, doc, labels=list(names))
            series: dict[str, dict[str, float]] = defaultdict(dict)
            for field, value in data.items():
                metric, _, rest = field.partition("|")
                if metric == name:
                    labels, _, part = rest.rpartition("|")
                    series[labels][part] = float(value)
            for labels, parts in series.items():
                cumulative, buckets = 0.0, []
                for bound in (*BUCKETS, float("inf")):
                    cumulative += parts.get(f"le={bound}", 0.0)
                    buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
                hist.add_metric(_values(labels), buckets, parts.get("sum", 0.0))
            yield hist


def _values(labels: str) -> list[str]:
    return [pair.partition("=")[2] for pair in labels.split(",")] if labels else []
