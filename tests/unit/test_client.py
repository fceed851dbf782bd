from typing import Any

from celery import Celery

from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from tests.helpers import drain_queue, make_request


def _client(settings: Settings, store: Store, celery_app: Celery) -> TransferClient:
    return TransferClient(settings, store=store, celery=celery_app)


def test_valid_request_is_enqueued_once(settings: Settings, store: Store,
                                        celery_app: Celery) -> None:
    client = _client(settings, store, celery_app)
    result = client.connect_to_live_agent(make_request(lead_id="L1"), summary="wants a refund")
    assert result["status"] == "transfer_requested"
    msgs = drain_queue(celery_app, "transfers")
    assert len(msgs) == 1
    assert msgs[0]["task"] == "warm_transfer.request"
    sent = msgs[0]["kwargs"]["request"]
    assert sent["transfer_id"] == result["transfer_id"] == msgs[0]["id"]
    assert sent["template"]["configurations"]["transfer_number"] == "+14155550101"
    assert sent["lead"] == {"outbound_number_id": "main-line"}  # as sent: the worker resolves it
    assert sent["summary"] == "wants a refund"
    assert store.lead_status("L1")["status"] == "requested"  # type: ignore[index]


def test_second_call_for_same_lead_is_in_progress(settings: Settings, store: Store,
                                                  celery_app: Celery) -> None:
    client = _client(settings, store, celery_app)
    first = client.connect_to_live_agent(make_request(lead_id="L1"))
    second = client.connect_to_live_agent(make_request(lead_id="L1"))
    assert second["status"] == "transfer_in_progress"
    assert second["transfer_id"] == first["transfer_id"]
    assert len(drain_queue(celery_app, "transfers")) == 1


def test_same_request_id_returns_same_transfer(settings: Settings, store: Store,
                                               celery_app: Celery) -> None:
    client = _client(settings, store, celery_app)
    a = client.connect_to_live_agent(make_request(lead_id="L1", request_id="req-1"))
    b = client.connect_to_live_agent(make_request(lead_id="L1", request_id="req-1"))
    assert a == b
    assert len(drain_queue(celery_app, "transfers")) == 1


def test_missing_transfer_number_sends_nothing(settings: Settings, store: Store,
                                               celery_app: Celery) -> None:
    client = _client(settings, store, celery_app)
    result = client.connect_to_live_agent(make_request(lead_id="L1", transfer_number=None))
    assert result["status"] == "error" and result["error"] == "missing_transfer_number"
    assert drain_queue(celery_app, "transfers") == []
    assert store.lead_status("L1") is None
    assert store.get_flag("L1") is None


def test_missing_outbound_number_id_sends_nothing(settings: Settings, store: Store,
                                                  celery_app: Celery) -> None:
    client = _client(settings, store, celery_app)
    result = client.connect_to_live_agent(make_request(outbound_number_id=None))
    assert result["error"] == "missing_outbound_number_id"
    assert drain_queue(celery_app, "transfers") == []


def test_broker_down_is_an_error_and_releases_the_lead(settings: Settings, store: Store,
                                                       dead_celery: Celery) -> None:
    client = TransferClient(settings, store=store, celery=dead_celery)
    result = client.connect_to_live_agent(make_request(lead_id="L1"))
    assert result["status"] == "error" and result["error"] == "service_unavailable"
    assert store.active_transfer("L1") is None  # a retry by the AI can go through


def test_redis_down_is_an_error(settings: Settings, celery_app: Celery) -> None:
    broken = Store.from_settings(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    client = TransferClient(settings, store=broken, celery=celery_app)
    result: dict[str, Any] = client.connect_to_live_agent(make_request())
    assert result["error"] == "service_unavailable"
