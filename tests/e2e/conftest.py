"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.config import load_config
from gateway.services import GatewayServices
from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def services(gateway: Gateway) -> Iterator[GatewayServices]:
    """The gateway's domain services, opened in the test process (same database)."""
    opened = GatewayServices.open(load_config(gateway.config_path))
    yield opened
    opened.close()
