"""The Redis topologies the README claims, on real servers this test starts: a Sentinel-
managed master that fails over (store and Celery broker through `redis+sentinel://`), and a
three-node Redis Cluster (the store; Celery cannot use a Cluster as its broker)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis

from sandbox.redis_server import LocalCluster, RedisServer, SentinelServer, redis_binary
from shared.celery_config import make_celery
from shared.config import Settings
from shared.contracts import parse_request
from shared.store import State, Store
from tests.helpers import make_request

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _needs_redis_server() -> None:
    try:
        redis_binary()
    except RuntimeError as exc:
        pytest.skip(f"no redis-server binary here ({exc})")


def _settings(**values: Any) -> Settings:
    return Settings.model_validate({"transfer_ring_timeout": 5, **values})


def until_ok(step: Callable[[], T], timeout: float = 30.0) -> tuple[T, int]:
    """Run `step` until Redis answers (a failover in progress); (result, failed tries)."""
    deadline, failures = time.monotonic() + timeout, 0
    while True:
        try:
            return step(), failures
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            failures += 1
            assert time.monotonic() < deadline, "Redis did not come back"
            time.sleep(0.2)


def _lifecycle(store: Store, lead: str) -> str:
    """A transfer from request to failure down a two-number list; its transfer id."""
    raw = make_request(lead_id=lead, transfer_number=None, request_id=f"r-{lead}")
    raw["template"]["configurations"] = {"transfer_numbers": ["+14155550201", "+14155550202"]}
    req = parse_request(raw, lambda _: "+14155550199")
    assert store.begin(req) == ("created", "requested")
    assert store.begin(req) == ("exists", "requested")
    assert store.set_flag(lead, "+14155550201")
    assert store.transition(req.transfer_id, State.DIALING, "dialing").ok
    rec, number = store.serve_dial_up(req.transfer_id, "served", claim=f"nonce-{lead}")
    assert rec is not None and rec.lead_id == lead and number == "+14155550201"
    assert store.advance_destination(req.transfer_id, 0, "busy")[:2] == ("next", 1)
    assert store.get_flag(lead) == "+14155550202"
    assert store.transfer_for_call("twilio", req.call_id) == req.transfer_id
    assert store.transition(req.transfer_id, State.FAILED, "no one").ok
    assert store.get_flag(lead) is None and store.active_transfer(lead) is None
    store.mark_event_sent(req.transfer_id)
    return req.transfer_id


@pytest.fixture
def sentinel_setup() -> Iterator[tuple[RedisServer, RedisServer, SentinelServer]]:
    # No 5 s wait before the first sync (Redis 7's repl-diskless-sync-delay).
    with RedisServer(extra_args=("--repl-diskless-sync-delay", "0")) as master:
        replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(master.port)))
        with replica, SentinelServer(master.port) as sentinel:
            yield master, replica, sentinel


def test_sentinel_store_and_broker_survive_a_failover(
        sentinel_setup: tuple[RedisServer, RedisServer, SentinelServer]) -> None:
    master, replica, sentinel = sentinel_setup
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/{sentinel.master_name}/0"
    settings = _settings(redis_url=url)
    store = Store.from_settings(settings)
    replica_client = redis.Redis(port=replica.port, decode_responses=True)
    deadline = time.monotonic() + 20
    while replica_client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.1)
    before = _lifecycle(store, "sentinel-lead-1")
    # The Celery broker follows the same URL (kombu's sentinel:// transport).
    app = make_celery(settings, "sentinel-probe")
    app.send_task("probe.task", kwargs={"n": 1}, queue="probe")
    # Replicated before the master goes: WAIT for the replica to have every write.
    assert redis.Redis(port=master.port).execute_command("WAIT", 1, 5000) == 1

    master.proc.kill()  # type: ignore[union-attr]
    master.proc.wait()  # type: ignore[union-attr]
    started = time.monotonic()
    _, failures = until_ok(lambda: store.r.set("wt:failover-probe", "1"))
    after = _lifecycle(store, "sentinel-lead-2")
    promoted = sentinel.master_port()
    print(f"\nsentinel failover: new master :{promoted} after "
          f"{time.monotonic() - started:.1f}s, {failures} failed tries")
    assert promoted == replica.port
    assert store.get_transfer(before) is not None  # written before the failover, kept
    assert store.get_transfer(after) is not None
    # The broker, through Sentinel, on the new master: the message sent before is there,
    # and a new one goes through.
    until_ok(lambda: app.send_task("probe.task", kwargs={"n": 2}, queue="probe"))
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("probe", no_ack=True)
        got = sorted(queue.get(timeout=10).decode()[1]["n"] for _ in range(2))
        queue.close()
    assert got == [1, 2]


def test_cluster_store_runs_every_script_across_slots() -> None:
    with LocalCluster(3) as cluster:
        settings = _settings(redis_url=cluster.url, redis_cluster=True,
                             celery_broker_url="memory://")
        store = Store.from_settings(settings)
        leads = [f"cluster-lead-{i}" for i in range(12)]
        # The leads spread over the nodes: the scripts run on each.
        slots = {store.r.keyslot(f"transfer:{lead}") // (16384 // 3) for lead in leads}
        assert len(slots) == 3
        for lead in leads:
            tid = _lifecycle(store, lead)
            assert store.get_transfer(tid)["state"] == "failed"  # type: ignore[index]
        assert store.claim_due(now=10**10) == []  # every event marked sent


def test_cluster_needs_another_broker() -> None:
    with pytest.raises(ValueError, match="CELERY_BROKER_URL"):
        Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True)
