from shared.celery_config import broker_url_and_options, celery_config
from shared.config import Settings


def test_producers_fail_fast_and_workers_retry_for_ever(settings: Settings) -> None:
    producer, worker = celery_config(settings), celery_config(settings, "worker")
    assert producer["broker_connection_max_retries"] == 1
    assert producer["task_publish_retry_policy"]["max_retries"] == 1
    assert producer["broker_connection_timeout"] <= 3
    assert worker["broker_connection_max_retries"] is None
    assert worker["broker_connection_retry_on_startup"] is True
    # The routing table is the same for both.
    assert producer["task_routes"] == worker["task_routes"]


def test_a_sentinel_url_becomes_celerys_sentinel_broker() -> None:
    url, options = broker_url_and_options(
        "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/mymaster/1")
    assert url == ("sentinel://:pw@10.0.0.1:26379/1;sentinel://:pw@10.0.0.2:26380/1")
    assert options == {"master_name": "mymaster"}
    assert broker_url_and_options("amqp://guest@rabbit//") == ("amqp://guest@rabbit//", {})
    conf = celery_config(Settings(redis_url="redis+sentinel://h:26379/main/0",
                                   celery_broker_url="", redis_cluster=False), "worker")
    assert conf["broker_url"] == "sentinel://h:26379/0"
    assert conf["broker_transport_options"]["master_name"] == "main"
