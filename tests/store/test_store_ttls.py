"""The store's expiries come from `Settings.store`, the Lua scripts' included (passed as ARGV, not
written into them). Fast tests on a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chorus.settings import StoreSettings
from chorus.store.jobs import JobRepo
from chorus.store.keys import Keys
from chorus.store.schedule import ScheduleRepo
from chorus.store.spend import SpendLedger

STORE = StoreSettings(spend_ttl_s=100_000, job_spend_ttl_s=200_000, job_ttl_s=3_000, slot_ttl_s=4_000)


@pytest.fixture()
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


def _keys() -> Keys:
    return Keys(f"ttl-{uuid.uuid4().hex[:8]}")


def _near(ttl: int, expected: int) -> bool:
    return expected - 5 <= ttl <= expected


async def test_a_reservation_and_its_settlement_expire_as_set(client: aioredis.Redis) -> None:
    keys = _keys()
    ledger = SpendLedger(client, keys, "p", 1.0, job_id="job_t", store=STORE)
    reservation = await ledger.reserve(0.01)
    spend_key = next(iter(await client.keys(keys("spend", "p", "*"))))
    assert _near(await client.ttl(spend_key), STORE.spend_ttl_s)
    assert _near(await client.ttl(keys("reservations", "p")), STORE.spend_ttl_s)
    await ledger.settle(reservation, 0.004)
    assert _near(await client.ttl(keys("jobspend", "job_t")), STORE.job_spend_ttl_s)
    # A settlement whose reservation was already given back charges today's key afresh.
    await client.delete(spend_key)
    await ledger.settle("given-back", 0.002)
    assert _near(await client.ttl(spend_key), STORE.spend_ttl_s)


async def test_jobs_their_events_and_claimed_slots_expire_as_set(client: aioredis.Redis) -> None:
    keys = _keys()
    jobs = JobRepo(client, keys, STORE)
    job = await jobs.create("p")
    assert _near(await client.ttl(keys("job", job.id)), STORE.job_ttl_s)
    await jobs.emit(job.id, "end", {})
    assert _near(await client.ttl(keys("job", job.id, "events")), STORE.job_ttl_s)
    slots = ScheduleRepo(client, keys, STORE)
    assert await slots.claim("p", "2026-01-01T09:00", job.id)
    assert _near(await client.ttl(keys("slot", "p", "2026-01-01T09:00")), STORE.slot_ttl_s)
