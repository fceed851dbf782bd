"""One real stack per test session (see tests/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Services, require_broker

RING_TIMEOUT = 5
DEADLINE_MARGIN = 2

# The name the tests use for the running system.
Stack = Services


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    require_broker()
    with Services.running(tmp_path_factory.mktemp("integration"),
                          transfer_ring_timeout=RING_TIMEOUT,
                          transfer_deadline_margin=DEADLINE_MARGIN,
                          # The requests' outbound ids are not in the directory (so no home
                          # country): the flows dial the US and, on Exotel, India.
                          transfer_allowed_destinations="US,IN",
                          # The sandbox's SIP destinations.
                          transfer_allowed_sip_domains="pbx.example.com") as running:
        yield running


@pytest.fixture
def stack(services: Services) -> Iterator[Services]:
    services.sandbox.repeat_callbacks = 1
    yield services
    assert all(w.poll() is None for w in services.workers), "a worker process died"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
