"""Each workflow node on its own, with a scripted fake model: what it asks the model, what it returns.

No llama.cpp, Ray or Redis: a node is an async function of state and a runtime context, so the
test builds both by hand and hands the node a `FakeModelClient`. The real model's behaviour is
covered by the integration tests in tests/graphs/test_content_graph.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.runtime import Runtime

from chorus.errors import BudgetExceeded
from chorus.models import NodeRecord
from chorus.persona import PersonaSpec
from graphs.content.nodes.body import body, max_tokens_for
from graphs.content.nodes.finalize import finalize
from graphs.content.nodes.hook import HOOK_MAX_TOKENS, hook
from graphs.content.nodes.plan import plan
from graphs.content.nodes.review import review
from graphs.content.nodes.rewrite import rewrite
from graphs.content.prompts import STOP
from graphs.content.state import PostState, WorkflowContext
from tests.support.fake_model import FAKE_MODEL, FakeModelClient
from tests.support.personas import make_persona, unique_id
from tests.support.posts import SavedPosts

HOOK = "Roast day at the roastery."
BODY = "Our Kenya smells like blackcurrant and toast. Bags out Friday."
GOOD_DRAFT = f"{HOOK} {BODY} #EmberAndOak"


def runtime(
    model: FakeModelClient, persona: PersonaSpec | None = None, **changes: Any
) -> Runtime[WorkflowContext]:
    context = WorkflowContext(
        persona=persona or make_persona(unique_id("node")),
        model=model,
        save_post=changes.pop("save_post", None) or SavedPosts(),
        **changes,
    )
    return Runtime(context=context)


# --- plan -----------------------------------------------------------------------------------------


async def test_plan_picks_the_topic_used_longest_ago_and_calls_no_model() -> None:
    persona = make_persona(unique_id("plan"), topics=["roasts", "brewing", "farms"])
    model = FakeModelClient()
    recent = [
        {"text": "a", "topic": "roasts"},
        {"text": "b", "topic": "farms"},
        {"text": "c", "topic": "brewing"},
    ]
    update = await plan({"job_id": "job_plan"}, runtime(model, persona, recent=recent))
    assert update["topic"] == "brewing"
    assert update["rewrites"] == 0
    [own] = update["records"]
    assert own.node == "plan" and own.tier is None and own.cost_usd == 0.0
    assert model.calls == []


# --- hook -----------------------------------------------------------------------------------------


async def test_hook_asks_the_policy_tier_once_and_keeps_the_first_sentence() -> None:
    persona = make_persona(unique_id("hook"))
    model = FakeModelClient({"hook": f"{HOOK} And a second sentence.\nTopic: another"})
    update = await hook({"job_id": "job_hook", "topic": "roast day"}, runtime(model, persona))
    assert update["hook"] == HOOK
    [call] = model.calls
    assert call.step == "hook" and call.request.tier == persona.model_policy.hook == "premium"
    assert call.request.max_tokens == HOOK_MAX_TOKENS
    assert call.request.stop == list(STOP)
    assert call.request.use_cache is True
    assert call.request.persona == persona.id
    assert call.prompt.endswith("Topic: roast day\nPost:")
    [own] = update["records"]
    assert (own.node, own.tier, own.model) == ("hook", "premium", FAKE_MODEL)
    assert own.cost_usd == model.cost_per_call_usd and own.completion_tokens > 0


async def test_a_step_named_in_no_cache_steps_is_asked_without_the_cache() -> None:
    persona = make_persona(
        unique_id("nocache"), rules={"required_hashtags": ["#EmberAndOak"], "no_cache_steps": ["hook"]}
    )
    model = FakeModelClient({"hook": HOOK})
    await hook({"job_id": "job_nocache", "topic": "t"}, runtime(model, persona))
    assert model.calls[0].request.use_cache is False


async def test_a_budget_stop_in_the_hook_reaches_the_caller() -> None:
    persona = make_persona(unique_id("broke"))
    stop = BudgetExceeded(persona.id, spent_usd=0.5, budget_usd=0.5, needed_usd=0.01)
    model = FakeModelClient(errors={"hook": stop})
    with pytest.raises(BudgetExceeded):
        await hook({"job_id": "job_broke", "topic": "t"}, runtime(model, persona))
    assert model.steps() == ["hook"]


async def test_the_hook_passes_the_context_guard_to_the_model() -> None:
    class Guard:
        persona_id, budget_usd, job_id = "p", 1.0, "job_guard"

        async def reserve(self, amount_usd: float) -> str:
            return "r"

        async def settle(self, reservation: str, actual_usd: float) -> None:
            return None

    guard = Guard()
    model = FakeModelClient({"hook": HOOK})
    await hook({"job_id": "job_guard", "topic": "t"}, runtime(model, guard=guard))
    assert model.calls[0].guard is guard


# --- body -----------------------------------------------------------------------------------------


async def test_body_continues_the_hook_and_adds_the_required_hashtag() -> None:
    persona = make_persona(unique_id("body"))
    model = FakeModelClient({"body": f"{BODY}\n###\nPost: the next example"})
    state: PostState = {"job_id": "job_body", "topic": "roast day", "hook": HOOK}
    update = await body(state, runtime(model, persona))
    assert update["draft"] == GOOD_DRAFT
    [call] = model.calls
    assert call.step == "body" and call.request.tier == persona.model_policy.body == "local"
    assert call.prompt.endswith(f"Post: {HOOK}")
    assert call.request.max_tokens == max_tokens_for(persona.max_chars)
    assert call.request.temperature == 0.8
    assert update["records"][0].node == "body"


async def test_an_overlong_body_is_cut_at_its_last_sentence_within_the_limit() -> None:
    persona = make_persona(unique_id("long"))
    sentence = "Fresh beans roasted slowly this morning taste like dark chocolate and cherries."
    model = FakeModelClient({"body": " ".join([sentence] * 6)})
    update = await body({"job_id": "job_long", "topic": "t", "hook": HOOK}, runtime(model, persona))
    draft = update["draft"]
    assert len(draft) <= persona.max_chars
    assert draft.startswith(HOOK) and draft.endswith("#EmberAndOak")
    assert draft.removesuffix(" #EmberAndOak").endswith("cherries.")


# --- review ---------------------------------------------------------------------------------------


async def test_review_accepts_a_draft_that_keeps_every_rule_without_a_model() -> None:
    model = FakeModelClient()
    update = await review({"job_id": "job_ok", "draft": GOOD_DRAFT, "rewrites": 0}, runtime(model))
    assert update["problems"] == [] and update["verdict"] == "accepted"
    assert update["records"][0].node == "review"
    assert model.calls == []


@pytest.mark.parametrize(("rewrites", "expected"), [(0, "rewrite"), (1, "rewrite"), (2, "rejected")])
async def test_review_sends_a_broken_draft_back_until_the_bound(rewrites: int, expected: str) -> None:
    draft = "Cheap beans for everyone, grab a bag of instant joy today. #EmberAndOak"
    state: PostState = {"job_id": "job_bad", "draft": draft, "rewrites": rewrites}
    update = await review(state, runtime(FakeModelClient(), max_rewrites=2))
    assert update["verdict"] == expected
    assert "uses the banned word 'cheap'" in update["problems"]
    assert "uses the banned word 'instant'" in update["problems"]


async def test_review_sees_a_copy_of_a_recent_post() -> None:
    recent = [{"text": GOOD_DRAFT, "topic": "roast day"}]
    state: PostState = {"job_id": "job_copy", "draft": GOOD_DRAFT}
    update = await review(state, runtime(FakeModelClient(), recent=recent))
    assert any("near-duplicate" in p for p in update["problems"]), update["problems"]
    assert update["verdict"] == "rewrite"


# --- rewrite --------------------------------------------------------------------------------------


async def test_rewrite_tells_the_model_what_was_wrong_and_counts_the_attempt() -> None:
    persona = make_persona(unique_id("rewrite"))
    model = FakeModelClient({"rewrite": f'"{BODY}"'})
    problems = ["uses the banned word 'cheap'"]
    state: PostState = {"job_id": "job_rw", "topic": "roast day", "problems": problems, "rewrites": 1}
    update = await rewrite(state, runtime(model, persona))
    assert update["rewrites"] == 2
    assert update["draft"] == f"{BODY} #EmberAndOak"
    [call] = model.calls
    assert call.step == "rewrite" and call.request.tier == persona.model_policy.rewrite
    assert "Editor's note on a rejected draft (uses the banned word 'cheap')" in call.prompt
    # Each attempt is its own request: a seed per attempt keeps the cache from repeating a draft.
    assert call.request.seed == 2 and call.request.temperature == 0.9
    assert update["records"][0].node == "rewrite"


# --- finalize -------------------------------------------------------------------------------------


def _records() -> list[NodeRecord]:
    return [
        NodeRecord(node="plan", duration_s=0.0),
        NodeRecord(
            node="hook", duration_s=0.1, tier="premium", prompt_tokens=30, completion_tokens=6, cost_usd=0.002
        ),
        NodeRecord(
            node="body", duration_s=0.2, tier="local", prompt_tokens=40, completion_tokens=20, cost_usd=0.001
        ),
        NodeRecord(node="review", duration_s=0.0),
    ]


async def test_finalize_stores_an_accepted_post_with_its_costs_under_the_job_id() -> None:
    persona = make_persona(unique_id("final"))
    saved = SavedPosts()
    state: PostState = {
        "job_id": "job_final",
        "topic": "roast day",
        "draft": GOOD_DRAFT,
        "verdict": "accepted",
        "problems": [],
        "rewrites": 0,
        "records": _records(),
    }
    update = await finalize(state, runtime(FakeModelClient(), persona, save_post=saved))
    [post] = saved.posts
    assert update["post_id"] == post.id == "job_final"
    assert (post.persona_id, post.platform, post.status) == (persona.id, "x", "accepted")
    assert post.text == GOOD_DRAFT and post.topic == "roast day" and post.reasons == []
    assert post.cost_usd == pytest.approx(0.003)
    assert (post.prompt_tokens, post.completion_tokens) == (70, 26)
    assert post.tiers == {"hook": "premium", "body": "local"}
    assert [n.node for n in post.nodes] == ["plan", "hook", "body", "review", "finalize"]
    assert [r.node for r in update["records"]] == ["finalize"]


async def test_finalize_stores_a_rejected_post_with_the_reasons_review_gave() -> None:
    saved = SavedPosts()
    problems = ["too long: 300 characters, the limit is 280"]
    state: PostState = {
        "job_id": "job_rejected",
        "topic": "t",
        "draft": "x" * 300,
        "verdict": "rejected",
        "problems": problems,
        "rewrites": 2,
        "records": _records(),
    }
    await finalize(state, runtime(FakeModelClient(), save_post=saved))
    [post] = saved.posts
    assert post.status == "rejected" and post.reasons == problems and post.rewrites == 2
