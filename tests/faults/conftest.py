"""The fault-injection suite's own stack: Redis with persistence (it gets restarted), a short
broker visibility timeout (workers get killed), a short provider timeout (slow APIs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Services, require_broker

RING_TIMEOUT = 5
DEADLINE_MARGIN = 2


@pytest.fixture(scope="session")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    require_broker()
    with Services.running(tmp_path_factory.mktemp("faults"), persistent_redis=True,
                          transfer_ring_timeout=RING_TIMEOUT,
                          transfer_deadline_margin=DEADLINE_MARGIN,
                          broker_visibility_timeout=3, provider_http_timeout=1.0,
                          # Anywhere: the load test mixes countries.
                          transfer_allowed_destinations="*",
                          transfer_allowed_sip_domains="pbx.example.com") as running:
        yield running


@pytest.fixture
def services(faulty: Services) -> Iterator[Services]:
    sb = faulty.sandbox
    sb.repeat_callbacks, sb.callback_jitter = 1, 0.0
    yield faulty
    sb.repeat_callbacks, sb.callback_jitter = 1, 0.0
    with sb.lock:
        sb.faults.clear()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long fault tests (a 30 s outage), left out "
                            "unless selected with -m slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    slow_selected = "slow" in (config.getoption("markexpr", "") or "")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            if item.get_closest_marker("slow") and not slow_selected:
                item.add_marker(pytest.mark.skip(reason="slow: run with -m slow"))
