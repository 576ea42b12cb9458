"""The outbox on a real redis-server: an item is queued once, claimed by one holder at a time with
a lease, at most one in flight per account and none for an account waiting for credentials;
leases that run out (or whose holder restarted) come back; a send whose answer was lost stays
marked so the next attempt checks the platform first."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chorus.models import OutboxItem
from chorus.persona import Platform
from chorus.publishing.protocol import PublishRequest
from chorus.store.keys import Keys
from chorus.store.outbox import OutboxRepo


@pytest.fixture()
async def outbox(redis_url: str) -> AsyncIterator[OutboxRepo]:
    client = aioredis.Redis.from_url(redis_url)
    yield OutboxRepo(client, Keys(f"outbox-{uuid.uuid4().hex[:8]}"))
    await client.aclose()


def item(post_id: str, account_id: str = "acct_a", due_at: float | None = None) -> OutboxItem:
    now = time.time()
    return OutboxItem(
        post_id=post_id,
        persona_id="p",
        account_id=account_id,
        platform=Platform.bluesky,
        due_at=now - 1 if due_at is None else due_at,
        request=PublishRequest(post_id=post_id, text=f"text of {post_id}", created_at=now),
    )


async def test_an_item_is_queued_once_and_keeps_its_request(outbox: OutboxRepo) -> None:
    first = item("job_1")
    assert await outbox.enqueue(first) is True
    assert await outbox.enqueue(item("job_1", due_at=time.time() + 999)) is False
    stored = await outbox.get("job_1")
    assert stored is not None and stored.request == first.request and stored.due_at == first.due_at
    assert await outbox.depth() == 1


async def test_a_claim_takes_due_items_one_per_account_and_leases_them(outbox: OutboxRepo) -> None:
    now = time.time()
    await outbox.enqueue(item("job_a1", "acct_a", now - 3))
    await outbox.enqueue(item("job_a2", "acct_a", now - 2))
    await outbox.enqueue(item("job_b1", "acct_b", now - 1))
    await outbox.enqueue(item("job_later", "acct_c", now + 3600))
    claimed = await outbox.claim("pub-1", now, lease_s=30, batch=10)
    assert sorted(i.post_id for i in claimed) == ["job_a1", "job_b1"]
    assert all(i.holder == "pub-1" and i.lease_until == pytest.approx(now + 30) for i in claimed)
    # Nothing more until job_a1 is done: one post in flight per account.
    assert await outbox.claim("pub-2", now, lease_s=30, batch=10) == []
    assert await outbox.complete("job_a1", "pub-2") is False  # not its lease
    assert await outbox.complete("job_a1", "pub-1") is True
    assert [i.post_id for i in await outbox.claim("pub-1", now, lease_s=30, batch=10)] == ["job_a2"]
    assert await outbox.depth() == 3
    assert await outbox.oldest_due_age(now) is None  # everything due is claimed


async def test_expired_leases_and_a_restarted_holder_give_items_back(outbox: OutboxRepo) -> None:
    now = time.time()
    await outbox.enqueue(item("job_x", "acct_x"))
    await outbox.enqueue(item("job_y", "acct_y"))
    await outbox.claim("pub", now, lease_s=5, batch=1)
    await outbox.claim("other", now, lease_s=60, batch=1)
    assert await outbox.expire_leases(now + 1) == 0
    assert await outbox.expire_leases(now + 10) == 1
    assert await outbox.release_holder("other") == 1
    again = await outbox.claim("pub", now + 10, lease_s=5, batch=10)
    assert sorted(i.post_id for i in again) == ["job_x", "job_y"]


async def test_a_send_whose_answer_was_lost_stays_marked(outbox: OutboxRepo) -> None:
    now = time.time()
    await outbox.enqueue(item("job_s"))
    [claimed] = await outbox.claim("pub", now, lease_s=30, batch=1)
    assert claimed.sending_since is None
    assert await outbox.mark_sending("job_s", "pub", now)
    # The publisher died mid-send: the lease runs out, the mark stays.
    await outbox.expire_leases(now + 60)
    [back] = await outbox.claim("pub", now + 60, lease_s=30, batch=1)
    assert back.sending_since == pytest.approx(now)
    await outbox.reschedule("job_s", "pub", now + 61, error="timeout", count_attempt=True, keep_sending=True)
    [kept] = await outbox.claim("pub", now + 62, lease_s=30, batch=1)
    assert kept.sending_since is not None and kept.attempts == 1 and kept.last_error == "timeout"
    await outbox.reschedule("job_s", "pub", now + 63, error="429", count_attempt=False)
    [cleared] = await outbox.claim("pub", now + 64, lease_s=30, batch=1)
    assert (
        cleared.sending_since is None and cleared.attempts == 1 and cleared.due_at == pytest.approx(now + 63)
    )


async def test_a_held_account_waits_without_losing_its_posts(outbox: OutboxRepo) -> None:
    now = time.time()
    await outbox.enqueue(item("job_h1", "acct_h"))
    await outbox.enqueue(item("job_h2", "acct_h"))
    await outbox.hold_account("acct_h", "Token has been revoked")
    assert await outbox.claim("pub", now, lease_s=30, batch=10) == []
    assert await outbox.held_accounts() == {"acct_h": "Token has been revoked"}
    assert sorted(await outbox.waiting_for("acct_h")) == ["job_h1", "job_h2"]
    assert await outbox.oldest_due_age(now + 5) == pytest.approx(6, abs=0.5)
    assert await outbox.release_account("acct_h")
    assert [i.post_id for i in await outbox.claim("pub", now, lease_s=30, batch=10)] == ["job_h1"]


async def test_a_waiting_item_can_be_moved_or_cancelled(outbox: OutboxRepo) -> None:
    now = time.time()
    await outbox.enqueue(item("job_m"))
    assert await outbox.move("job_m", now + 100)
    assert await outbox.claim("pub", now, lease_s=30, batch=10) == []
    assert await outbox.cancel("job_m")
    assert await outbox.depth() == 0 and await outbox.get("job_m") is None
