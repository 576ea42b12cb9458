"""Generating posts through the HTTP API (`POST /v1/personas/{id}/posts:generate`): synchronous
answers and queued jobs, their event streams, budget stops, the 402 refusal and the deadline.

On the real Serve, Redis, fleet and local tier, through a real HTTP client: integration tests.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from actors.fleet import Fleet
from chorus.models import Post
from chorus.persona import PersonaSpec
from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.keys import keys_for
from chorus.store.spend import SpendLedger
from tests.support.api import (
    assert_error,
    assert_no_internals,
    bearer,
    create_key,
    persona_body,
    read_events,
    snapshot,
)
from tests.support.personas import ALL_LOCAL, NO_CACHE, make_persona, unique_id
from tests.support.tiers import hook_only_budget


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
        ledger = SpendLedger.for_persona(spender, keys_for(api_settings), spec, api_settings)
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
