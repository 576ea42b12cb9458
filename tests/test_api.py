"""The HTTP API on the real Serve, Redis, fleet and local tier, through a real HTTP client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from actors.fleet import Fleet
from chorus.auth import KeyStore
from chorus.persona import PersonaSpec
from chorus.settings import Settings
from chorus.state import JobRepo, PersonaRepo, Post, PostRepo, SpendLedger, new_job_id
from chorus.store import Keys, async_redis, keys_for
from serve.schemas import SseDecoder, SseMessage
from tests.conftest import (
    API_LIMITS,
    SERVICE_KEY,
    assert_no_internals,
    create_key,
    hook_only_budget,
    make_persona,
    unique_id,
)

NO_CACHE = {"required_hashtags": ["#EmberAndOak"], "no_cache_steps": ["hook", "body", "rewrite"]}
ALL_LOCAL = {"hook": "local", "body": "local", "rewrite": "local"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def client(api: str, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, headers=bearer(admin_key), timeout=360) as client:
        yield client


@pytest.fixture(scope="module")
async def anonymous(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        yield client


def persona_body(persona_id: str, **changes: Any) -> dict[str, Any]:
    return make_persona(persona_id, **changes).model_dump(mode="json")


def snapshot(settings: Settings) -> dict[bytes, bytes | None]:
    """Every key under the prefix, serialised by Redis itself, once no job is running."""
    client = redis.Redis.from_url(settings.redis.url)
    keys = keys_for(settings)
    deadline = time.monotonic() + 300
    while client.zcard(keys("jobs", "pending")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return {key: client.dump(key) for key in sorted(client.scan_iter(match=keys("*"), count=1000))}


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code and error["field"] == field, error
    assert error["message"] and "Traceback" not in response.text
    return dict(error)


async def read_events(
    client: httpx.AsyncClient, job_id: str, *, last_id: str | None = None, first: asyncio.Event | None = None
) -> list[SseMessage]:
    """A job's events to the end; sets `first` once the first node event has arrived."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    messages: list[SseMessage] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        decoder = SseDecoder()
        async for line in response.aiter_lines():
            message = decoder.feed(line)
            if message is None:
                continue
            messages.append(message)
            if first is not None and message.event == "node":
                first.set()
            if message.event == "end":
                break
    return messages


# --- health, docs ------------------------------------------------------------------------------


async def test_health_readiness_and_docs_are_open(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
    deadline = time.monotonic() + 120
    while (ready := await anonymous.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(1)  # readiness may take a moment on a cold cluster: that is its point
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["redis"] == checks["local_tier"] == checks["directory"] == "ok"
    assert (await anonymous.get("/docs")).status_code == 200
    spec = (await anonymous.get("/openapi.json")).json()
    assert "/v1/personas/{persona_id}/posts:generate" in spec["paths"]
    assert "/v1/jobs/{job_id}/events" in spec["paths"]
    # The local tier's OpenAI routes stay where they were, on the same Serve instance, behind a key.
    assert (await anonymous.get("/llm/v1/models")).status_code == 401
    assert (await anonymous.get("/llm/v1/models", headers=bearer(SERVICE_KEY))).status_code == 200


# --- personas ------------------------------------------------------------------------------------


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


# --- generation end to end -----------------------------------------------------------------------


async def test_generate_sync_then_async_with_events_to_early_and_late_clients(
    client: httpx.AsyncClient,
) -> None:
    persona_id = unique_id("e2e")
    assert (
        await client.post("/v1/personas", json=persona_body(persona_id, rules=NO_CACHE))
    ).status_code == 201

    # Synchronous: the answer carries the finished job and its stored, costed post.
    sync = await client.post(f"/v1/personas/{persona_id}/posts:generate", json={"count": 1})
    assert sync.status_code == 200, sync.text
    [job] = sync.json()["jobs"]
    assert job["status"] == "done", job
    post = Post.model_validate(job["post"])
    assert post.cost_usd > 0 and post.prompt_tokens > 0 and post.completion_tokens > 0
    assert post.tiers["hook"] == "premium" and post.tiers["body"] == "local"
    stored = (await client.get("/v1/posts", params={"persona": persona_id})).json()["posts"]
    assert [p["id"] for p in stored] == [post.id] and stored[0]["cost_usd"] == post.cost_usd

    # An update applies from the next job on: the hook moves to the local tier.
    policy = {"hook": "local", "body": "local", "rewrite": "local"}
    updated = await client.put(
        f"/v1/personas/{persona_id}", json=persona_body(persona_id, rules=NO_CACHE, model_policy=policy)
    )
    assert updated.status_code == 200, updated.text

    # Asynchronous: 202 with the job at once; one client follows from the start, another joins
    # after the first node, a third resumes after the first event with Last-Event-ID.
    queued = await client.post(f"/v1/personas/{persona_id}/posts:generate", params={"async": "true"})
    assert queued.status_code == 202, queued.text
    [job] = queued.json()["jobs"]
    assert job["status"] in ("queued", "running") and queued.headers["location"] == f"/v1/jobs/{job['id']}"
    first_node = asyncio.Event()
    early = asyncio.create_task(read_events(client, job["id"], first=first_node))
    await asyncio.wait_for(first_node.wait(), 300)
    late = await read_events(client, job["id"])
    early_events = await early
    resumed = await read_events(client, job["id"], last_id=early_events[0].id)

    kinds = [m.event for m in early_events]
    assert kinds[-2:] == ["post", "end"] and set(kinds[:-2]) == {"node"}
    nodes = [m.json_data() for m in early_events if m.event == "node"]
    names = [n["node"] for n in nodes]
    assert names[:4] == ["plan", "hook", "body", "review"] and names[-1] == "finalize"
    for node in nodes:
        assert {"node", "duration_s", "tier", "prompt_tokens", "completion_tokens", "cost_usd"} <= set(node)
    assert [(m.id, m.event, m.data) for m in late] == [(m.id, m.event, m.data) for m in early_events]
    assert [m.id for m in resumed] == [m.id for m in early_events[1:]]
    ids = [m.id for m in early_events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, (i or "0-0").split("-"))))

    streamed = Post.model_validate(early_events[-2].json_data())
    assert streamed.tiers["hook"] == "local"  # the updated spec
    assert early_events[-1].json_data()["status"] == "done"
    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert detail["status"] == "done" and detail["post"]["id"] == streamed.id

    stats = (await client.get(f"/v1/personas/{persona_id}/stats")).json()
    assert stats["posts"] == 2 and stats["accepted"] + stats["rejected"] == 2
    assert stats["spend_today_usd"] == pytest.approx(post.cost_usd + streamed.cost_usd)


async def test_a_quiet_job_keeps_its_stream_open_with_keepalives(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    """Longer than the Redis client's socket timeout without an event: the stream stays up."""
    assert (await client.get("/readyz")).status_code == 200  # the directory has resumed its queue
    redis_client = async_redis(api_settings)
    jobs = JobRepo(redis_client, keys_for(api_settings))
    job = await jobs.create(unique_id("quiet"))  # nobody runs it: this test writes its events
    lines: list[str] = []

    async def read() -> None:
        async with client.stream("GET", f"/v1/jobs/{job.id}/events") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                lines.append(line)
                if line == "event: end":
                    return

    reader = asyncio.create_task(read())
    await asyncio.sleep(7)
    assert not reader.done()
    await jobs.emit(job.id, "node", {"node": "plan", "duration_s": 0.0})
    await jobs.update(job.id, status="done", finished_at=time.time())
    await jobs.emit(job.id, "end", {"status": "done"})
    await asyncio.wait_for(reader, 30)
    await redis_client.aclose()
    assert lines.count(": keep-alive") >= 2
    assert [line for line in lines if line.startswith("event:")] == ["event: node", "event: end"]


# --- listing posts -------------------------------------------------------------------------------


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
                Post(
                    id=f"job_{owner}_{i}",
                    persona_id=owner,
                    platform="x",
                    status="accepted" if i % 3 else "rejected",
                    text=f"post {i}",
                    topic="t",
                    cost_usd=0.001,
                    prompt_tokens=10,
                    completion_tokens=5,
                    tiers={"body": "local"},
                    nodes=[],
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


# --- engagement ----------------------------------------------------------------------------------


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
        post = Post(
            id=f"job_{persona_id}_{i}",
            persona_id=persona_id,
            platform="x",
            status="accepted",
            text=f"post {i}",
            topic="t",
            cost_usd=cost,
            prompt_tokens=10,
            completion_tokens=5,
            tiers={"body": "local"},
            nodes=[],
            created_at=time.time(),
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


# --- keys and roles ------------------------------------------------------------------------------


async def test_keys_and_roles_refuse_without_changing_anything(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id = unique_id("auth")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    viewer = (await client.post("/v1/keys", json={"role": "viewer", "name": "v"})).json()
    editor = (await client.post("/v1/keys", json={"role": "editor"})).json()
    revoked = (await client.post("/v1/keys", json={"role": "admin"})).json()
    assert viewer["key"].startswith(f"chorus_{viewer['id']}_") and viewer["role"] == "viewer"
    assert (await client.delete(f"/v1/keys/{revoked['id']}")).json()["keys"][0]["revoked_at"] is not None
    # Live keys by default; revoked ones until purged, when asked for.
    listed = (await client.get("/v1/keys", params={"include_revoked": "true"})).json()["keys"]
    assert {viewer["id"], editor["id"], revoked["id"]} <= {k["id"] for k in listed}
    live = {k["id"] for k in (await client.get("/v1/keys")).json()["keys"]}
    assert {viewer["id"], editor["id"]} <= live and revoked["id"] not in live
    assert all("key" not in k and "sha256" not in k for k in listed)

    before = snapshot(api_settings)
    generate = f"/v1/personas/{persona_id}/posts:generate"
    assert_error(await anonymous.post(generate), 401, "missing_key")
    assert_error(await anonymous.get("/v1/personas"), 401, "missing_key")
    # The key is checked before the body is read, on Serve as in the plain app.
    not_utf8 = await anonymous.post(
        "/v1/personas", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert_error(not_utf8, 401, "missing_key")
    unknown = f"chorus_{viewer['id']}_not-the-secret"
    assert_error(await anonymous.post(generate, headers=bearer(unknown)), 401, "invalid_key")
    assert_error(await anonymous.get("/v1/posts", headers=bearer("garbage")), 401, "invalid_key")
    gone = assert_error(await anonymous.post(generate, headers=bearer(revoked["key"])), 401, "invalid_key")
    assert "revoked" in gone["message"]
    refused = await anonymous.post(generate, headers=bearer(viewer["key"]))
    assert_error(refused, 403, "forbidden")
    assert_error(
        await anonymous.delete(f"/v1/personas/{persona_id}", headers=bearer(viewer["key"])), 403, "forbidden"
    )
    assert_error(
        await anonymous.post("/v1/keys", json={"role": "admin"}, headers=bearer(editor["key"])),
        403,
        "forbidden",
    )
    assert (
        await anonymous.get(f"/v1/personas/{persona_id}", headers=bearer(viewer["key"]))
    ).status_code == 200
    assert snapshot(api_settings) == before


# --- bad input -----------------------------------------------------------------------------------


async def test_bad_input_gets_its_documented_error_and_changes_nothing(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id, broke = unique_id("bad"), unique_id("broke")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    assert (
        await client.post("/v1/personas", json=persona_body(broke, daily_budget_usd=0))
    ).status_code == 201
    generate = f"/v1/personas/{persona_id}/posts:generate"
    json_headers = {"Content-Type": "application/json"}
    before = snapshot(api_settings)

    error = assert_error(
        await client.post(generate, content=b'{"count": ', headers=json_headers), 422, "invalid_json"
    )
    assert "not valid JSON" in error["message"]
    assert_error(
        await client.post("/v1/personas", content=b"[1, 2]", headers=json_headers), 422, "invalid_json"
    )
    error = assert_error(
        await client.post(generate, json={"count": 1, "colour": "red"}), 422, "unknown_field", "colour"
    )
    assert error["message"] == "colour: unknown field"
    error = assert_error(await client.post(generate, json={"count": "many"}), 422, "invalid_field", "count")
    assert "valid integer" in error["message"]
    limit = API_LIMITS["max_body_bytes"]
    oversized = {"count": 1, "pad": "x" * int(limit)}
    assert_error(await client.post(generate, json=oversized), 413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(int(limit) // 1024 + 2):
            yield b" " * 1024

    assert_error(await client.post(generate, content=chunks(), headers=json_headers), 413, "body_too_large")

    bad_spec = persona_body(unique_id("bad"))
    bad_spec["platforms"][0]["name"] = "myspace"
    error = assert_error(
        await client.post("/v1/personas", json=bad_spec), 422, "invalid_field", "platforms[0].name"
    )
    assert "'x', 'bluesky', 'mastodon' or 'linkedin'" in error["message"]
    bad_spec = {**persona_body(persona_id), "topcis": ["typo"]}
    assert_error(
        await client.put(f"/v1/personas/{persona_id}", json=bad_spec), 422, "unknown_field", "topcis"
    )
    bad_spec = {**persona_body(persona_id), "cadence": {"timezone": "Mars/Base"}}
    error = assert_error(
        await client.put(f"/v1/personas/{persona_id}", json=bad_spec),
        422,
        "invalid_field",
        "cadence.timezone",
    )
    assert "unknown time zone 'Mars/Base'" in error["message"]

    assert_error(await client.post("/v1/personas/nobody-here/posts:generate"), 404, "persona_not_found")
    assert_error(await client.get("/v1/personas/nobody-here/stats"), 404, "persona_not_found")
    assert_error(await client.get("/v1/personas/nobody-here/schedule"), 404, "persona_not_found")
    assert_error(await client.get("/v1/jobs/job_missing"), 404, "job_not_found")
    assert_error(await client.get("/v1/jobs/job_missing/events"), 404, "job_not_found")
    assert_error(await client.get("/v1/jobs/job_missing:events"), 404, "job_not_found")
    not_a_cursor = await client.get("/v1/posts", params={"cursor": "1_000:job_x"})
    assert_error(not_a_cursor, 422, "invalid_field", "cursor")
    assert_error(await client.delete("/v1/keys/nope"), 404, "key_not_found")
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await client.get("/v1/posts", params={"cursor": "bogus"}), 422, "invalid_field", "cursor")
    assert_error(await client.get("/v1/posts", params={"limit": 0}), 422, "invalid_field", "limit")
    assert_error(await client.get("/v1/posts", params={"status": "maybe"}), 422, "invalid_field", "status")

    budget = assert_error(await client.post(f"/v1/personas/{broke}/posts:generate"), 402, "budget_exceeded")
    assert budget["details"]["spent_usd"] == 0 and budget["details"]["budget_usd"] == 0
    too_many = API_LIMITS["max_pending_jobs"] + 1
    busy = await client.post(generate, params={"async": "true"}, json={"count": too_many})
    assert_error(busy, 503, "overloaded")
    assert int(busy.headers["retry-after"]) > 0

    assert snapshot(api_settings) == before


async def test_a_viewer_key_made_in_redis_reads_but_cannot_write(
    anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    key = await create_key(api_settings, "viewer")
    assert (await anonymous.get("/v1/status", headers=bearer(key))).json()["queue_depth"] >= 0
    assert_error(
        await anonymous.post("/v1/keys", json={"role": "viewer"}, headers=bearer(key)), 403, "forbidden"
    )


async def test_a_job_stopped_by_its_budget_shows_a_code_and_one_line_never_a_traceback(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    probe = make_persona(unique_id("apibroke"), model_policy=ALL_LOCAL, rules=NO_CACHE)
    budget = hook_only_budget(api_settings, probe)
    body = probe.model_copy(update={"daily_budget_usd": budget}).model_dump(mode="json")
    assert (await client.post("/v1/personas", json=body)).status_code == 201
    generated = await client.post(
        f"/v1/personas/{probe.id}/posts:generate", params={"async": "true"}, json={"count": 1}
    )
    assert generated.status_code == 202, generated.text
    [job] = generated.json()["jobs"]
    [end] = [m for m in await read_events(client, job["id"]) if m.event == "end"]
    assert_no_internals(end.data)
    viewer = bearer(await create_key(api_settings, "viewer"))
    response = await anonymous.get(f"/v1/jobs/{job['id']}", headers=viewer)
    assert response.status_code == 200
    assert_no_internals(response.text)
    detail = response.json()
    assert detail["status"] == "budget_exceeded" and detail["error_code"] == "budget_exceeded"
    assert len(detail["error"].splitlines()) == 1
    assert "daily budget" in detail["error"] and "resets at" in detail["error"]
    stats = (await anonymous.get(f"/v1/personas/{probe.id}/stats", headers=viewer)).json()
    assert stats["posts"] == 0 and stats["failed_spend_usd"] == pytest.approx(stats["spend_today_usd"])
    assert stats["failed_spend_usd"] > 0


async def test_generate_is_refused_with_402_when_the_next_call_cannot_fit(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    """A persona with budget left, but less than a job's first call can cost: refused at once,
    with the figures in significant digits, and no job queued (it could only fail)."""
    persona_id = unique_id("nearlybroke")
    body = persona_body(persona_id, daily_budget_usd=0.0001)
    assert (await client.post("/v1/personas", json=body)).status_code == 201
    spec = PersonaSpec.model_validate(body)
    spender = async_redis(api_settings)
    try:
        # Spent the way the router spends: a reservation on the persona's ledger.
        ledger = SpendLedger.of(spender, keys_for(api_settings), spec, api_settings.budget.default_daily_usd)
        await ledger.reserve(0.0000312)
    finally:
        await spender.aclose()
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    before = snapshot(api_settings)
    for params in ({}, {"async": "true"}):
        refused = await client.post(
            f"/v1/personas/{persona_id}/posts:generate", params=params, json={"count": 1}
        )
        error = assert_error(refused, 402, "budget_exceeded")
        details = error["details"]
        assert details["spent_usd"] == pytest.approx(0.0000312)
        assert details["budget_usd"] == 0.0001
        assert details["next_call_usd"] > details["budget_usd"] - details["spent_usd"]
        assert datetime.fromisoformat(details["resets_at"]) == datetime(
            tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC
        )
        # Money with significant digits, never "$0.0000 of its $0.0001".
        assert "$0.0000312" in error["message"] and "$0.0000 " not in error["message"]
    assert snapshot(api_settings) == before  # no job, nothing stored


async def test_a_synchronous_generate_answers_202_with_its_jobs_at_the_deadline(
    client: httpx.AsyncClient, fleet_settings: Settings
) -> None:
    """One deadline for the whole request, however many posts, and however short."""
    persona_id = unique_id("deadline")
    # No cache: each post makes real model calls, seconds each on the local tier.
    created = await client.post("/v1/personas", json=persona_body(persona_id, rules=NO_CACHE))
    assert created.status_code == 201, created.text
    generate = f"/v1/personas/{persona_id}/posts:generate"
    job_ids: list[str] = []
    for count, timeout_s, within_s in ((1, 1e-9, 0.75), (3, 1.0, 1.0 + 0.75)):
        started = time.monotonic()
        answer = await client.post(generate, json={"count": count, "timeout_s": timeout_s})
        elapsed = time.monotonic() - started
        assert answer.status_code == 202, answer.text
        jobs = answer.json()["jobs"]
        assert len(jobs) == count and all(job["status"] in ("queued", "running") for job in jobs)
        assert answer.headers["location"] == f"/v1/jobs/{jobs[0]['id']}"
        assert timeout_s <= elapsed < within_s, f"{count} post(s), timeout {timeout_s}s: {elapsed:.2f}s"
        job_ids += [job["id"] for job in jobs]
    # The jobs carry on after the answer, and finish.
    fleet = Fleet(fleet_settings)
    try:
        for job_id in job_ids:
            assert (await fleet.wait(job_id, timeout_s=300)).status == "done"
    finally:
        await fleet.redis.aclose()


# --- data the user manages: posts, deleted personas, keys ----------------------------------------


async def test_an_editor_deletes_a_post_and_its_cost_stays_counted(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id = unique_id("delpost")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    store = async_redis(api_settings)
    repo = PostRepo(store, keys_for(api_settings))
    post = Post(
        id=new_job_id(),
        persona_id=persona_id,
        platform="x",
        status="accepted",
        text="Fresh roast Friday. #EmberAndOak",
        topic="roasting",
        cost_usd=0.003,
        prompt_tokens=10,
        completion_tokens=5,
        tiers={"hook": "local"},
        nodes=[],
        created_at=time.time(),
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


async def test_a_persona_is_restorable_only_within_the_retention(redis_url: str) -> None:
    client = async_redis_at(redis_url)
    repo = PersonaRepo(client, Keys(unique_id("retention")))
    spec = make_persona(unique_id("kept"))
    try:
        assert await repo.put(spec)
        assert await repo.delete(spec.id, retain_s=3600)
        assert await repo.get(spec.id) is None and spec.id not in await repo.ids()
        ttl = await client.ttl(repo._k("deleted", "persona", spec.id))
        assert 3500 < ttl <= 3600
        assert await repo.restore(spec.id) == ("restored", spec)
        assert await repo.delete(spec.id, retain_s=0)
        assert await repo.restore(spec.id) == ("gone", None)
        assert not await repo.delete(spec.id)
    finally:
        await client.aclose()


def async_redis_at(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url)


async def test_keys_show_no_secret_read_the_same_unknown_or_revoked_and_purge(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    created = (await client.post("/v1/keys", json={"role": "viewer", "name": "hint"})).json()
    secret = created["key"].split("_", 2)[2]
    assert created["hint"] == f"chorus_{created['id']}_" and secret[:4] not in created["hint"]
    listed = {k["id"]: k for k in (await client.get("/v1/keys")).json()["keys"]}
    assert listed[created["id"]]["hint"] == f"chorus_{created['id']}_"

    unknown = f"chorus_{created['id']}_{'x' * len(secret)}"
    wrong = assert_error(await anonymous.get("/v1/posts", headers=bearer(unknown)), 401, "invalid_key")
    assert (await client.delete(f"/v1/keys/{created['id']}")).status_code == 200
    gone = assert_error(await anonymous.get("/v1/posts", headers=bearer(created["key"])), 401, "invalid_key")
    assert gone["message"] == wrong["message"]

    purged = await client.post("/v1/keys:purge")
    assert purged.status_code == 200 and created["id"] in purged.json()["purged"]
    everything = (await client.get("/v1/keys", params={"include_revoked": "true"})).json()["keys"]
    assert created["id"] not in {k["id"] for k in everything}
    assert all(k["revoked_at"] is None for k in everything)  # only revoked records went
    after = assert_error(await anonymous.get("/v1/posts", headers=bearer(created["key"])), 401, "invalid_key")
    assert after["message"] == wrong["message"]
    assert_error(await client.delete(f"/v1/keys/{created['id']}"), 404, "key_not_found")


async def test_the_last_admin_key_cannot_be_revoked(redis_url: str, settings: Settings) -> None:
    from serve.app import create_app

    # A key space of its own: the session's admin key must stay usable for the other tests.
    isolated = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"key_prefix": unique_id("lastadmin")})}
    )
    first, second = await create_key(isolated, "admin"), await create_key(isolated, "admin")
    first_id, second_id = first.split("_")[1], second.split("_")[1]
    transport = httpx.ASGITransport(app=create_app(isolated))
    async with httpx.AsyncClient(transport=transport, base_url="http://chorus", headers=bearer(first)) as api:
        viewer = (await api.post("/v1/keys", json={"role": "viewer"})).json()
        assert (await api.delete(f"/v1/keys/{second_id}")).status_code == 200
        refused = assert_error(await api.delete(f"/v1/keys/{first_id}"), 409, "last_admin_key")
        assert "last admin key" in refused["message"]
        assert (await api.get("/v1/keys")).status_code == 200  # still an admin
        assert (await api.delete(f"/v1/keys/{viewer['id']}")).status_code == 200  # others go

    # Two admins revoking each other's keys at once: one of the two keys survives.
    connection = async_redis(isolated)
    store = KeyStore(connection, keys_for(isolated))
    a, b = (await store.create("admin"))[0], (await store.create("admin"))[0]
    assert (await store.revoke(first_id)) is not None
    outcomes = await asyncio.gather(store.revoke(a.id), store.revoke(b.id), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["ApiKey", "LastAdminKey"]
    assert len([k for k in await store.list() if k.role == "admin"]) == 1
    await connection.aclose()
