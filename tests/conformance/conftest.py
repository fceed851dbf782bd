"""One real stack for the conformance suite (see tests/stack.py), with short ring timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Services

# Short: the cases end by the sandbox's fates, never by waiting a ring timeout out.
RING_TIMEOUT = 5  # the settings' minimum
DEADLINE_MARGIN = 2


@pytest.fixture(scope="session")
def conformance_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with Services.running(tmp_path_factory.mktemp("conformance"),
                          transfer_ring_timeout=RING_TIMEOUT,
                          transfer_deadline_margin=DEADLINE_MARGIN,
                          transfer_allowed_destinations="US,IN") as running:
        yield running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
