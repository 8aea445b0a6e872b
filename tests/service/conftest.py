"""Fixtures of the service tests."""

from __future__ import annotations

import pytest

from tests.fakes.served_api import serve


@pytest.fixture
async def api():
    async with serve() as served:
        yield served
