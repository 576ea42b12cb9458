"""Persona routes: create, read, update, delete and restore; stats, schedule and engagement.

On the real Serve, Redis, fleet and local tier, through a real HTTP client: integration tests.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.keys import keys_for
from chorus.store.posts import PostRepo
from tests.support.api import (
    assert_error,
    bearer,
    create_key,
    persona_body,
    snapshot,
)
from tests.support.personas import make_persona, unique_id
from tests.support.posts import make_post


async def test_persona_create_read_update_delete(client: httpx.AsyncClient) -> None:
    persona_id = unique_id("crud")
    created = await client.post("/v1/personas", json=persona_body(persona_id))
    assert created.status_code == 201, created.text
    assert created.json()["id"] == persona_id
    assert_error(await client.post("/v1/personas", json=persona_body(persona_id)), 409, "persona_exists")

    assert (await client.get(f"/v1/personas/{persona_id}")).json()[
        "display_name"
    ] == "Ember & Oak Coffee Roasters"
    listed = (await client.get("/v1/personas")).json()["personas"]
    assert persona_id in [p["id"] for p in listed]

    updated = await client.put(
        f"/v1/personas/{persona_id}", json=persona_body(persona_id, display_name="Renamed")
    )
    assert updated.status_code == 200, updated.text
    assert (await client.get(f"/v1/personas/{persona_id}")).json()["display_name"] == "Renamed"
    mismatch = await client.put(f"/v1/personas/{persona_id}", json=persona_body("other-id"))
    assert_error(mismatch, 422, "invalid_field", "id")

    stats = (await client.get(f"/v1/personas/{persona_id}/stats")).json()
    assert stats["posts"] == 0 and stats["cost_per_accepted_post_usd"] is None
    schedule = (await client.get(f"/v1/personas/{persona_id}/schedule")).json()
    spec = make_persona(persona_id)
    assert schedule["autopost"] is False and schedule["timezone"] == spec.cadence.timezone
    assert len(schedule["slots"]) == int(spec.cadence.posts_per_day)
    assert all(slot["job_id"] is None for slot in schedule["slots"])

    assert (await client.delete(f"/v1/personas/{persona_id}")).status_code == 204
    assert_error(await client.get(f"/v1/personas/{persona_id}"), 404, "persona_not_found")
    assert_error(await client.delete(f"/v1/personas/{persona_id}"), 404, "persona_not_found")


async def test_concurrent_creates_of_one_id_let_exactly_one_win(client: httpx.AsyncClient) -> None:
    persona_id = unique_id("race")
    names = [f"Contender {n}" for n in range(8)]
    answers = await asyncio.gather(
        *(client.post("/v1/personas", json=persona_body(persona_id, display_name=name)) for name in names)
    )
    winners = [name for name, answer in zip(names, answers, strict=True) if answer.status_code == 201]
    assert len(winners) == 1, [a.status_code for a in answers]
    for answer in answers:
        if answer.status_code != 201:
            assert_error(answer, 409, "persona_exists")
    # The stored spec is the winner's, not one a losing request overwrote it with.
    assert (await client.get(f"/v1/personas/{persona_id}")).json()["display_name"] == winners[0]
    await client.delete(f"/v1/personas/{persona_id}")


async def test_engagement_reports_feed_stats_and_bad_reports_change_nothing(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id = unique_id("audience")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    engagement = f"/v1/personas/{persona_id}/engagement"
    stats = (await client.get(f"/v1/personas/{persona_id}/stats")).json()
    assert stats["followers"] is stats["engagement_rate"] is stats["cost_per_follower_usd"] is None

    redis_client = async_redis(api_settings)
    repo = PostRepo(redis_client, keys_for(api_settings))
    for i, cost in enumerate((0.002, 0.004)):
        post = make_post(
            persona_id,
            id=f"job_{persona_id}_{i}",
            text=f"post {i}",
            cost_usd=cost,
            prompt_tokens=10,
            completion_tokens=5,
            tiers={"body": "local"},
        )
        await repo.save(post)
    await redis_client.aclose()

    first = await client.post(
        engagement, json={"platform": "x", "followers": 100, "impressions": 1000, "engagements": 40}
    )
    assert first.status_code == 201, first.text
    assert first.json()["engagement_rate"] == pytest.approx(0.04)
    # The latest report per platform replaces the previous one.
    await client.post(
        engagement, json={"platform": "x", "followers": 300, "impressions": 2000, "engagements": 50}
    )
    listed = await client.get(engagement)
    assert listed.status_code == 200, listed.text
    [latest] = listed.json()["engagements"]
    assert (latest["followers"], latest["engagement_rate"]) == (300, pytest.approx(0.025))
    stats = (await client.get(f"/v1/personas/{persona_id}/stats")).json()
    assert stats["followers"] == 300
    assert stats["engagement_rate"] == pytest.approx(0.025)
    assert stats["cost_per_follower_usd"] == pytest.approx(0.006 / 300)

    viewer = await create_key(api_settings, "viewer")
    before = snapshot(api_settings)
    not_posting_there = {"platform": "linkedin", "followers": 5, "impressions": 5, "engagements": 1}
    error = assert_error(
        await client.post(engagement, json=not_posting_there), 422, "invalid_field", "platform"
    )
    assert "does not post to linkedin" in error["message"]
    negative = {"platform": "x", "followers": -1, "impressions": 0, "engagements": 0}
    assert_error(await client.post(engagement, json=negative), 422, "invalid_field", "followers")
    assert_error(
        await client.post(engagement, json={"platform": "x", "followers": 1}),
        422,
        "invalid_field",
        "impressions",
    )
    assert_error(
        await client.post("/v1/personas/nobody-here/engagement", json=not_posting_there),
        404,
        "persona_not_found",
    )
    refused = await anonymous.post(
        engagement, json={**not_posting_there, "platform": "x"}, headers=bearer(viewer)
    )
    assert_error(refused, 403, "forbidden")
    assert snapshot(api_settings) == before
    assert (await anonymous.get(engagement, headers=bearer(viewer))).status_code == 200


async def _active(client: httpx.AsyncClient) -> list[str]:
    return list((await client.get("/v1/status")).json()["directory"]["active"])


async def test_a_deleted_persona_stops_its_actor_and_comes_back_with_its_engagement(
    client: httpx.AsyncClient,
) -> None:
    persona_id = unique_id("restore")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    generated = await client.post(f"/v1/personas/{persona_id}/posts:generate", json={"count": 1})
    assert generated.status_code == 200, generated.text
    assert persona_id in await _active(client)
    report = {"platform": "x", "followers": 120, "impressions": 1000, "engagements": 30}
    assert (await client.post(f"/v1/personas/{persona_id}/engagement", json=report)).status_code == 201

    assert (await client.delete(f"/v1/personas/{persona_id}")).status_code == 204
    deadline = time.monotonic() + 30  # a job's last bookkeeping may still hold the actor briefly
    while persona_id in await _active(client) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert persona_id not in await _active(client)
    assert_error(await client.get(f"/v1/personas/{persona_id}/engagement"), 404, "persona_not_found")

    restored = await client.post(f"/v1/personas/{persona_id}:restore")
    assert restored.status_code == 200, restored.text
    assert restored.json() == persona_body(persona_id)
    engagement = (await client.get(f"/v1/personas/{persona_id}/engagement")).json()["engagements"]
    assert [(e["platform"], e["followers"]) for e in engagement] == [("x", 120)]
    assert (await client.get(f"/v1/personas/{persona_id}/stats")).json()["followers"] == 120
    assert_error(await client.post(f"/v1/personas/{persona_id}:restore"), 404, "persona_not_found")

    # Deleted again and the id taken anew: the kept copy does not overwrite the new persona.
    assert (await client.delete(f"/v1/personas/{persona_id}")).status_code == 204
    fresh = persona_body(persona_id, display_name="A new persona")
    assert (await client.put(f"/v1/personas/{persona_id}", json=fresh)).status_code == 201
    assert_error(await client.post(f"/v1/personas/{persona_id}:restore"), 409, "persona_exists")
    assert (await client.get(f"/v1/personas/{persona_id}")).json()["display_name"] == "A new persona"
