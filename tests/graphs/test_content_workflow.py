"""The compiled content graph with a scripted fake model: its route through the rewrite loop.

Scripted answers decide each review's verdict, so every path is exact: accepted at once,
accepted after a rewrite, rejected at the bound. No llama.cpp or Ray; the one resume test uses
the session's real Redis for the checkpoint saver. The same graph on the real model is in
tests/graphs/test_content_graph.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from langchain_core.runnables import RunnableConfig

from chorus.models import Post
from graphs.checkpoint import RedisCheckpointSaver
from graphs.content.graph import build_content_graph
from graphs.content.state import WorkflowContext
from tests.support.fake_model import FakeModelClient
from tests.support.personas import make_persona, unique_id
from tests.support.posts import SavedPosts

HOOK = "Roast day at the roastery."
GOOD_BODY = "Our Kenya smells like blackcurrant and toast. Bags out Friday."
GOOD_REWRITE = "Fresh Kenya on the shelf Friday, all blackcurrant and toast."
BANNED = "Cheap beans for everyone, grab a bag of instant joy today."


def context(model: FakeModelClient, saved: SavedPosts, **changes: Any) -> WorkflowContext:
    persona = changes.pop("persona", None) or make_persona(unique_id("flow"))
    return WorkflowContext(persona=persona, model=model, save_post=saved, **changes)


async def run(model: FakeModelClient, **changes: Any) -> tuple[dict[str, Any], Post]:
    saved = SavedPosts()
    job_id = unique_id("job")
    state = await build_content_graph().ainvoke({"job_id": job_id}, context=context(model, saved, **changes))
    [post] = saved.posts
    assert post.id == job_id
    return state, post


async def test_a_good_first_draft_goes_straight_to_finalize() -> None:
    model = FakeModelClient({"hook": HOOK, "body": GOOD_BODY})
    state, post = await run(model)
    assert [r.node for r in state["records"]] == ["plan", "hook", "body", "review", "finalize"]
    assert model.steps() == ["hook", "body"]
    assert post.status == "accepted" and post.reasons == [] and post.rewrites == 0
    assert post.text == f"{HOOK} {GOOD_BODY} #EmberAndOak"
    assert post.cost_usd == pytest.approx(2 * model.cost_per_call_usd)
    assert post.tiers == {"hook": "premium", "body": "local"}


async def test_a_broken_draft_is_rewritten_once_then_accepted() -> None:
    model = FakeModelClient({"hook": HOOK, "body": BANNED, "rewrite": GOOD_REWRITE})
    state, post = await run(model)
    nodes = [r.node for r in state["records"]]
    assert nodes == ["plan", "hook", "body", "review", "rewrite", "review", "finalize"]
    assert post.status == "accepted" and post.rewrites == 1
    assert post.text == f"{GOOD_REWRITE} #EmberAndOak"
    [call] = model.calls_of("rewrite")
    assert "banned word 'cheap'" in call.prompt and call.request.seed == 1


async def test_drafts_that_never_pass_loop_until_the_bound_then_are_rejected() -> None:
    model = FakeModelClient({"hook": HOOK, "body": BANNED, "rewrite": BANNED})
    state, post = await run(model, max_rewrites=2)
    nodes = [r.node for r in state["records"]]
    assert nodes.count("rewrite") == 2 and nodes.count("review") == 3
    assert model.steps() == ["hook", "body", "rewrite", "rewrite"]
    assert [c.request.seed for c in model.calls_of("rewrite")] == [1, 2]
    assert post.status == "rejected" and post.rewrites == 2
    assert "uses the banned word 'cheap'" in post.reasons
    assert post.cost_usd == pytest.approx(sum(n.cost_usd for n in post.nodes))
    assert post.cost_usd == pytest.approx(4 * model.cost_per_call_usd)


async def test_no_rewrites_allowed_means_a_broken_draft_is_rejected_at_once() -> None:
    model = FakeModelClient({"hook": HOOK, "body": BANNED})
    _, post = await run(model, max_rewrites=0)
    assert model.steps() == ["hook", "body"]
    assert post.status == "rejected" and post.rewrites == 0 and post.reasons


async def test_a_run_interrupted_after_the_hook_resumes_without_asking_for_it_again(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        saver = RedisCheckpointSaver(aclient=client, key_prefix=f"fake-flow-{uuid.uuid4().hex[:8]}")
        graph = build_content_graph(saver)
        saved = SavedPosts()
        first = FakeModelClient({"hook": HOOK, "body": GOOD_BODY})
        ctx = context(first, saved)
        job_id = unique_id("job")
        config: RunnableConfig = {"configurable": {"thread_id": job_id}}
        await graph.ainvoke({"job_id": job_id}, config, context=ctx, interrupt_after=["hook"])
        assert first.steps() == ["hook"] and saved.posts == []
        # A new client stands for a new process: only the checkpoint carries the run over.
        resumed = FakeModelClient({"body": GOOD_BODY})
        state = await graph.ainvoke(None, config, context=context(resumed, saved, persona=ctx.persona))
        assert resumed.steps() == ["body"]
        assert [r.node for r in state["records"]].count("hook") == 1
        [post] = saved.posts
        assert post.status == "accepted" and post.text.startswith(HOOK)
    finally:
        await client.aclose()
