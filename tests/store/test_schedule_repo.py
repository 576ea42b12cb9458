"""ScheduleRepo on a real redis-server: a cadence slot is claimed by one job only. Fast tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chorus.store.keys import Keys
from chorus.store.schedule import ScheduleRepo


@pytest.fixture()
async def repo(redis_url: str) -> AsyncIterator[ScheduleRepo]:
    client = aioredis.Redis.from_url(redis_url)
    yield ScheduleRepo(client, Keys(f"slots-{uuid.uuid4().hex[:8]}"))
    await client.aclose()


async def test_a_slot_is_claimed_once_and_names_its_job(repo: ScheduleRepo) -> None:
    assert await repo.claim("p", "2026-01-01T09:00", "job_a") is True
    assert await repo.claim("p", "2026-01-01T09:00", "job_b") is False
    assert await repo.jobs("p", ["2026-01-01T09:00", "2026-01-01T13:00"]) == ["job_a", None]
    assert await repo.jobs("p", []) == []
