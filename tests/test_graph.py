"""The content workflow alone (no actors): rules, the bounded rewrite loop, novelty, resume."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from langchain_core.runnables import RunnableConfig

from chorus.llm.router import LLMResult, Router
from chorus.settings import Settings
from chorus.state import Post, PostRepo
from chorus.store import keys_for
from graphs.checkpoint import RedisCheckpointSaver
from graphs.content.graph import build_content_graph
from graphs.content.nodes.plan import choose_topic
from graphs.content.nodes.review import review_post, similarity, verdict
from graphs.content.prompts import clean_post, first_line, fit_to_length, with_required_hashtags
from graphs.content.state import WorkflowContext
from tests.conftest import make_persona, unique_id


class CountingRouter(Router):
    """The real router, counting the model calls each step makes (what a resume must not repeat)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def complete(self, **kwargs: Any) -> LLMResult:
        self.calls[kwargs["step"]] += 1
        return await super().complete(**kwargs)


@pytest.fixture()
async def aredis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


def _context(settings: Settings, client: aioredis.Redis, router: Router, **changes: Any) -> WorkflowContext:
    posts = PostRepo(client, keys_for(settings))
    persona = changes.pop("persona", None) or make_persona(unique_id("graph"))
    return WorkflowContext(persona=persona, router=router, save_post=posts.save, **changes)


# --- rules, without a model ---------------------------------------------------------------------


def test_review_names_every_broken_rule() -> None:
    persona = make_persona(
        "rules-check",
        banned_words=["cheap"],
        banned_topics=["politics"],
        rules={"required_hashtags": ["#EmberAndOak"], "min_hashtags": 1, "max_hashtags": 2},
    )
    problems = review_post(persona, "Cheap beans and politics today #a #b #c " + "x" * 300, [])
    joined = " | ".join(problems)
    assert "too long" in joined and "limit is 280" in joined
    assert "banned word 'cheap'" in joined
    assert "banned topic 'politics'" in joined
    assert "missing the required hashtag #EmberAndOak" in joined
    assert "has 3 hashtags, at most 2" in joined
    good = "Roast day: our Kenya smells like blackcurrant and toast. Bags out Friday. #EmberAndOak"
    assert review_post(persona, good, []) == []


def test_review_catches_a_near_duplicate_but_not_a_new_post() -> None:
    persona = make_persona("novelty-check")
    recent = "Roast day! Our Ethiopia Guji smells like blueberries and toast. Bags Friday. #EmberAndOak"
    near = "Roast day! Our Ethiopia Guji smells like blueberries and toast. Bags on Friday! #EmberAndOak"
    fresh = "Pour-over tip: grind a little finer when your cup tastes sour. #EmberAndOak"
    assert similarity(near, recent) > 0.8
    assert any("near-duplicate" in p for p in review_post(persona, near, [recent]))
    assert review_post(persona, fresh, [recent]) == []


def test_verdict_bounds_the_rewrite_loop() -> None:
    assert verdict([], 0, 2) == "accepted"
    assert verdict(["x"], 0, 2) == "rewrite"
    assert verdict(["x"], 2, 2) == "rejected"


def test_plan_prefers_topics_not_used_recently() -> None:
    topics = ["a", "b", "c"]
    assert choose_topic(topics, []) == "a"
    assert choose_topic(topics, ["a"]) == "b"
    assert choose_topic(topics, ["b", "a", "c"]) == "c"  # c is the oldest use


def test_cleanup_strips_what_the_model_adds_after_the_post() -> None:
    raw = ' "Cold brew is back. Come early!"\n###\nPost: another one\nTopic: x'
    assert clean_post(raw) == "Cold brew is back. Come early!"
    assert clean_post("Topic: Story time at the library #RiversideReads") == (
        "Story time at the library #RiversideReads"
    )
    assert first_line("1. Beans. 2. More beans") == "1. Beans."
    assert fit_to_length("One sentence here. Two sentences here. Three", 40) == (
        "One sentence here. Two sentences here."
    )
    assert with_required_hashtags("Hello there", ["#Tag"], 100) == "Hello there #Tag"
    assert with_required_hashtags("x" * 99, ["#Tag"], 100) == "x" * 99


# --- the graph on the real local tier -----------------------------------------------------------


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
