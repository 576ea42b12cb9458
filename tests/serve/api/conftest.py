"""Clients of the session's Serve-deployed API, one pair per test module of tests/serve/api/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.api import bearer


@pytest.fixture(scope="module")
async def client(api: str, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the session's admin key."""
    async with httpx.AsyncClient(base_url=api, headers=bearer(admin_key), timeout=360) as client:
        yield client


@pytest.fixture(scope="module")
async def anonymous(api: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API without a key (tests add the key they mean to show in each request)."""
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        yield client
