"""rewrite: a fresh draft after a failed review, told what was wrong (premium tier by default)."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from chorus.llm.types import ModelRequest
from graphs.content.nodes.body import max_tokens_for
from graphs.content.prompts import (
    STOP,
    clean_post,
    fit_to_length,
    rewrite_messages,
    with_required_hashtags,
)
from graphs.content.state import PostState, WorkflowContext, record


async def rewrite(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    persona = ctx.persona
    attempt = state.get("rewrites", 0) + 1
    request = ModelRequest(
        step="rewrite",
        tier=persona.model_policy.rewrite,
        messages=rewrite_messages(persona, state["topic"], state.get("problems", [])),
        max_tokens=max_tokens_for(persona.max_chars),
        temperature=0.9,
        # Each attempt is a new request: a cached answer would repeat the rejected draft.
        seed=attempt,
        stop=list(STOP),
        use_cache="rewrite" not in persona.rules.no_cache_steps,
        persona=persona.id,
    )
    result = await ctx.model.complete(request, ctx.guard)
    return {
        "draft": with_required_hashtags(
            fit_to_length(clean_post(result.text), persona.max_chars),
            persona.rules.required_hashtags,
            persona.max_chars,
        ),
        "rewrites": attempt,
        "records": [record("rewrite", time.perf_counter() - started, result)],
    }
