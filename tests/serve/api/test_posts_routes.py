"""Post routes: listing with filters and cursor paging, and deleting a post (its cost stays counted).

On the real Serve, Redis, fleet and local tier, through a real HTTP client: integration tests.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.keys import keys_for
from chorus.store.posts import PostRepo
from tests.support.api import assert_error, bearer, create_key, persona_body
from tests.support.personas import unique_id
from tests.support.posts import make_post


async def test_posts_filter_by_persona_status_and_time_with_cursor_paging(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id, other = unique_id("list"), unique_id("list")
    redis_client = async_redis(api_settings)
    repo = PostRepo(redis_client, keys_for(api_settings))
    base = float(int(time.time()) - 1000)  # whole seconds: the API reads times to the microsecond
    for i in range(7):
        for owner in (persona_id, other):
            await repo.save(
                make_post(
                    owner,
                    id=f"job_{owner}_{i}",
                    status="accepted" if i % 3 else "rejected",
                    text=f"post {i}",
                    cost_usd=0.001,
                    prompt_tokens=10,
                    completion_tokens=5,
                    tiers={"body": "local"},
                    created_at=base + i,
                )
            )
    await redis_client.aclose()

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"persona": persona_id, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/posts", params=params)).json()
        seen += [p["id"] for p in page["posts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"job_{persona_id}_{i}" for i in reversed(range(7))]

    rejected = (await client.get("/v1/posts", params={"persona": persona_id, "status": "rejected"})).json()
    assert [p["text"] for p in rejected["posts"]] == ["post 6", "post 3", "post 0"]
    window = {"persona": persona_id, "since": base + 2, "until": base + 5}
    assert [p["text"] for p in (await client.get("/v1/posts", params=window)).json()["posts"]] == [
        "post 4",
        "post 3",
        "post 2",
    ]


async def test_an_editor_deletes_a_post_and_its_cost_stays_counted(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id = unique_id("delpost")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    store = async_redis(api_settings)
    repo = PostRepo(store, keys_for(api_settings))
    post = make_post(
        persona_id,
        text="Fresh roast Friday. #EmberAndOak",
        topic="roasting",
        cost_usd=0.003,
        prompt_tokens=10,
        completion_tokens=5,
        tiers={"hook": "local"},
    )
    assert await repo.save(post)
    assert len(await repo.recent(persona_id)) == 1
    viewer, editor = await create_key(api_settings, "viewer"), await create_key(api_settings, "editor")

    path = f"/v1/posts/{post.id}"
    assert_error(await anonymous.delete(path, headers=bearer(viewer)), 403, "forbidden")
    assert (await anonymous.delete(path, headers=bearer(editor))).status_code == 204
    listed = (await client.get("/v1/posts", params={"persona": persona_id})).json()["posts"]
    assert listed == []
    assert await repo.get(post.id) is None and await repo.recent(persona_id) == []
    assert_error(await client.delete(path), 404, "post_not_found")
    stats = (await client.get(f"/v1/personas/{persona_id}/stats")).json()
    assert stats["posts"] == 1 and stats["cost_usd"] == pytest.approx(0.003)
    assert "/v1/posts/{post_id}" in (await anonymous.get("/openapi.json")).json()["paths"]
    await store.aclose()
