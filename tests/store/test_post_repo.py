"""PostRepo on a real redis-server: a post is stored and counted once, paged newest first, and
deleted without undoing what it cost. No Ray, no model: fast tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chorus.models import PostQuery
from chorus.store.keys import Keys
from chorus.store.posts import PostRepo
from tests.support.personas import unique_id
from tests.support.posts import make_post


@pytest.fixture()
async def repo(redis_url: str) -> AsyncIterator[PostRepo]:
    client = aioredis.Redis.from_url(redis_url)
    yield PostRepo(client, Keys(f"store-{uuid.uuid4().hex[:8]}"), recent_window=3)
    await client.aclose()


async def test_a_post_is_stored_and_counted_once_per_job(repo: PostRepo) -> None:
    persona_id = unique_id("posts")
    post = make_post(persona_id, cost_usd=0.002, prompt_tokens=10, completion_tokens=4)
    assert await repo.save(post) is True
    assert await repo.save(post.model_copy(update={"text": "a retried job's second draft"})) is False
    assert await repo.get(post.id) == post
    stats = await repo.stats(persona_id, spend_today=0.0, budget=1.0)
    assert (stats.posts, stats.accepted, stats.rejected) == (1, 1, 0)
    assert stats.cost_usd == pytest.approx(0.002)
    assert (stats.prompt_tokens, stats.completion_tokens) == (10, 4)


async def test_recent_keeps_the_latest_accepted_posts_within_the_window(repo: PostRepo) -> None:
    persona_id = unique_id("recent")
    for i in range(4):
        await repo.save(make_post(persona_id, text=f"post {i}", topic=f"topic {i}", created_at=float(i)))
    await repo.save(make_post(persona_id, status="rejected", text="not novel-checked", created_at=9.0))
    assert [r["text"] for r in await repo.recent(persona_id)] == ["post 3", "post 2", "post 1"]


async def test_pages_run_newest_first_and_filter_by_status(repo: PostRepo) -> None:
    persona_id = unique_id("page")
    for i in range(5):
        status = "rejected" if i % 2 else "accepted"
        await repo.save(make_post(persona_id, id=f"job_{persona_id}_{i}", status=status, created_at=float(i)))
    first = await repo.page(PostQuery(persona_id=persona_id, limit=2))
    assert [p.id for p in first.posts] == [f"job_{persona_id}_4", f"job_{persona_id}_3"]
    assert first.next_cursor is not None
    rest = await repo.page(PostQuery(persona_id=persona_id, limit=5, cursor=first.next_cursor))
    assert [p.id for p in rest.posts] == [f"job_{persona_id}_{i}" for i in (2, 1, 0)]
    assert rest.next_cursor is None
    rejected = await repo.page(PostQuery(persona_id=persona_id, status="rejected"))
    assert [p.id for p in rejected.posts] == [f"job_{persona_id}_3", f"job_{persona_id}_1"]


async def test_deleting_a_post_unindexes_it_and_keeps_its_cost(repo: PostRepo) -> None:
    persona_id = unique_id("delete")
    post = make_post(persona_id, cost_usd=0.003)
    await repo.save(post)
    assert await repo.delete(post.id) is True
    assert await repo.delete(post.id) is False
    assert await repo.get(post.id) is None
    assert await repo.recent(persona_id) == []
    assert (await repo.page(PostQuery(persona_id=persona_id))).posts == []
    assert (await repo.lifetime_costs([persona_id]))[persona_id] == pytest.approx(0.003)
