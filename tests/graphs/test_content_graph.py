"""The content workflow on the real local tier (no actors): the bounded rewrite loop, novelty, resume.

The same graph with a scripted fake model is in tests/graphs/test_content_workflow.py; these keep
the real model (llama.cpp on Serve): integration tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from langchain_core.runnables import RunnableConfig

from chorus.llm.router import LLMResult, Router
from chorus.llm.types import ModelRequest, SpendGuard
from chorus.models import Post
from chorus.settings import Settings
from chorus.store.keys import keys_for
from chorus.store.posts import PostRepo
from graphs.checkpoint import RedisCheckpointSaver
from graphs.content.graph import build_content_graph
from graphs.content.state import WorkflowContext
from tests.support.personas import make_persona, unique_id


class CountingRouter(Router):
    """The real router, counting the model calls each step makes (what a resume must not repeat)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def complete(self, request: ModelRequest, guard: SpendGuard | None = None) -> LLMResult:
        self.calls[request.step] += 1
        return await super().complete(request, guard)


@pytest.fixture()
async def aredis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


def _context(settings: Settings, client: aioredis.Redis, router: Router, **changes: Any) -> WorkflowContext:
    posts = PostRepo(client, keys_for(settings))
    persona = changes.pop("persona", None) or make_persona(unique_id("graph"))
    return WorkflowContext(persona=persona, model=router, save_post=posts.save, **changes)


async def test_rule_breaking_drafts_loop_until_the_bound_then_reject(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    # The required hashtag holds a banned word: no draft can pass, so the loop must hit its bound.
    persona = make_persona(
        unique_id("strict"),
        banned_words=["EmberAndOak"],
        model_policy={"hook": "local", "body": "local", "rewrite": "local"},
    )
    router = CountingRouter(settings, aredis)
    ctx = _context(settings, aredis, router, persona=persona, max_rewrites=2)
    graph = build_content_graph()
    job_id = unique_id("job")
    state = await graph.ainvoke({"job_id": job_id}, context=ctx)
    nodes = [r.node for r in state["records"]]
    assert nodes.count("rewrite") == 2, (nodes, state.get("draft"), state.get("problems"))
    assert nodes.count("review") == 3
    assert router.calls == {"hook": 1, "body": 1, "rewrite": 2}
    post = await PostRepo(aredis, keys_for(settings)).get(job_id)
    assert post is not None and post.status == "rejected"
    assert post.reasons and all(isinstance(r, str) and r for r in post.reasons)
    assert post.rewrites == 2
    assert post.cost_usd == pytest.approx(sum(n.cost_usd for n in post.nodes))
    assert {n.node for n in post.nodes} >= {"plan", "hook", "body", "review", "rewrite", "finalize"}
    await router.aclose()


async def test_near_duplicate_of_a_recent_post_is_sent_back(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    persona = make_persona(unique_id("dupe"), topics=["roast day"], banned_words=[])
    router = CountingRouter(settings, aredis)
    graph = build_content_graph()
    first = await graph.ainvoke(
        {"job_id": unique_id("job")}, context=_context(settings, aredis, router, persona=persona)
    )
    # The same persona, topic and prompts again: the cached hook and body give the same draft,
    # which review must now see as a copy of the post it just stored.
    recent = [{"text": first["draft"], "topic": "roast day"}]
    ctx = _context(settings, aredis, router, persona=persona, recent=recent)
    reviews = []
    async for update in graph.astream({"job_id": unique_id("job")}, context=ctx, stream_mode="updates"):
        if "review" in update:
            reviews.append(update["review"]["problems"])
    assert any("near-duplicate" in p for p in reviews[0]), reviews
    await router.aclose()


async def test_interrupted_run_resumes_without_paying_for_the_hook_again(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    saver = RedisCheckpointSaver(aclient=aredis, key_prefix=keys_for(settings)("ckpt-test"))
    graph = build_content_graph(saver)
    router = CountingRouter(settings, aredis)
    ctx = _context(settings, aredis, router)
    job_id = unique_id("job")
    config: RunnableConfig = {"configurable": {"thread_id": job_id}}
    await graph.ainvoke({"job_id": job_id}, config, context=ctx, interrupt_after=["hook"])
    assert router.calls == {"hook": 1}
    # A new router stands for a new process: only the checkpoint carries the run over.
    resumed = CountingRouter(settings, aredis)
    state = await graph.ainvoke(
        None, config, context=_context(settings, aredis, resumed, persona=ctx.persona)
    )
    assert resumed.calls["hook"] == 0 and resumed.calls["body"] == 1
    assert [r.node for r in state["records"]].count("hook") == 1
    post = await PostRepo(aredis, keys_for(settings)).get(job_id)
    assert isinstance(post, Post) and post.text
    await router.aclose()
    await resumed.aclose()
