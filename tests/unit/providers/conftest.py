"""Fixtures shared by the providers' unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The sandbox as a Flask app, no server; its callbacks try once (to a closed port)."""
    sb = Sandbox()
    sb.callback_attempts = 1
    yield sb
    sb.stop()
