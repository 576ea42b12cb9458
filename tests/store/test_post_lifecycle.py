"""A post's lifecycle in the store: every move recorded with who, when and why; illegal moves
refused naming the state and the allowed moves, with nothing changed; racing writers cannot both
win; the inbox lists what waits by persona, platform and age."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chorus.errors import IllegalTransition, UnknownPost
from chorus.models import InboxQuery, PostQuery
from chorus.persona import Platform
from chorus.store.keys import Keys
from chorus.store.posts import PostRepo
from tests.support.personas import unique_id
from tests.support.posts import make_post


@pytest.fixture()
async def repo(redis_url: str) -> AsyncIterator[PostRepo]:
    client = aioredis.Redis.from_url(redis_url)
    yield PostRepo(client, Keys(f"life-{uuid.uuid4().hex[:8]}"))
    await client.aclose()


async def test_every_move_is_recorded_with_actor_time_and_reason(repo: PostRepo) -> None:
    post = make_post(unique_id("life"))
    await repo.save(post)
    await repo.transition(post.id, "pending_approval", actor="system", reason="needs approval")
    before = time.time()
    moved = await repo.transition(post.id, "approved", actor="key_editor1", reason="looks good")
    assert moved.state == "approved" and (await repo.get(post.id)).state == "approved"  # type: ignore[union-attr]
    history = await repo.history(post.id)
    assert history.state == "approved"
    assert [(t.from_state, t.to_state, t.actor) for t in history.transitions] == [
        (None, "accepted", "system"),
        ("accepted", "pending_approval", "system"),
        ("pending_approval", "approved", "key_editor1"),
    ]
    assert history.transitions[-1].reason == "looks good"
    assert history.transitions[-1].at >= before


async def test_an_illegal_move_names_the_state_and_the_allowed_moves_and_changes_nothing(
    repo: PostRepo,
) -> None:
    post = make_post(unique_id("illegal"))
    await repo.save(post)
    with pytest.raises(IllegalTransition) as refused:
        await repo.transition(post.id, "published", actor="system")
    assert refused.value.current == "accepted"
    assert refused.value.allowed == ["pending_approval", "scheduled"]
    assert "accepted" in str(refused.value) and "pending_approval, scheduled" in str(refused.value)
    assert await repo.get(post.id) == post
    assert len((await repo.history(post.id)).transitions) == 1
    with pytest.raises(UnknownPost):
        await repo.transition("job_missing", "approved", actor="system")


async def test_a_bad_update_fails_before_anything_is_written(repo: PostRepo) -> None:
    post = make_post(unique_id("badupdate"))
    await repo.save(post)
    with pytest.raises(ValueError):
        await repo.transition(post.id, "scheduled", actor="system", updates={"publish_at": "soon"})
    assert (await repo.get(post.id)) == post
    assert (await repo.count_by_state())["scheduled"] == 0


async def test_two_approvers_racing_on_one_post_cannot_both_win(repo: PostRepo) -> None:
    post = make_post(unique_id("race"))
    await repo.save(post)
    await repo.transition(post.id, "pending_approval", actor="system")
    outcomes = await asyncio.gather(
        repo.transition(post.id, "approved", actor="a", expect=("pending_approval",)),
        repo.transition(post.id, "rejected", actor="b", expect=("pending_approval",)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, IllegalTransition) for o in outcomes) == 1
    history = await repo.history(post.id)
    assert [t.to_state for t in history.transitions][-1] in ("approved", "rejected")
    assert len(history.transitions) == 3
    counts = await repo.count_by_state()
    assert counts["approved"] + counts["rejected"] == 1 and counts["pending_approval"] == 0


async def test_the_inbox_filters_by_persona_platform_and_age(repo: PostRepo) -> None:
    alpha, beta = unique_id("alpha"), unique_id("beta")
    posts = [make_post(alpha), make_post(alpha, platform="bluesky"), make_post(beta), make_post(beta)]
    for post in posts:
        await repo.save(post)
    for post in posts[:3]:
        await repo.transition(post.id, "pending_approval", actor="system")
    waiting = await repo.inbox(InboxQuery())
    assert [p.id for p in waiting] == [p.id for p in posts[:3]]  # longest waiting first
    assert [p.id for p in await repo.inbox(InboxQuery(persona_id=alpha))] == [posts[0].id, posts[1].id]
    assert [p.id for p in await repo.inbox(InboxQuery(platform=Platform.bluesky))] == [posts[1].id]
    assert await repo.inbox(InboxQuery(older_than_s=3600)) == []
    assert len(await repo.inbox(InboxQuery(older_than_s=3600), now=time.time() + 7200)) == 3
    assert [p.id for p in await repo.inbox(InboxQuery(limit=1))] == [posts[0].id]
    page = await repo.page(PostQuery(state="pending_approval", persona_id=beta))
    assert [p.id for p in page.posts] == [posts[2].id]


async def test_deleting_a_post_removes_its_state_index_and_history(repo: PostRepo) -> None:
    post = make_post(unique_id("del"))
    await repo.save(post)
    await repo.transition(post.id, "pending_approval", actor="system")
    assert await repo.delete(post.id)
    assert (await repo.count_by_state())["pending_approval"] == 0
    with pytest.raises(UnknownPost):
        await repo.history(post.id)
