"""body: the rest of the post, continuing from the hook (local tier by default)."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from chorus.llm.types import ModelRequest
from graphs.content.prompts import (
    STOP,
    body_messages,
    clean_post,
    fit_to_length,
    with_required_hashtags,
)
from graphs.content.state import PostState, WorkflowContext, record


def max_tokens_for(chars: int) -> int:
    # About four characters a token, with room to finish a sentence that fit_to_length can cut.
    return max(32, min(400, chars // 3))


async def body(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    persona, hook_text = ctx.persona, state.get("hook", "")
    request = ModelRequest(
        step="body",
        tier=persona.model_policy.body,
        messages=body_messages(persona, state["topic"], hook_text),
        max_tokens=max_tokens_for(persona.max_chars),
        temperature=0.8,
        stop=list(STOP),
        use_cache="body" not in persona.rules.no_cache_steps,
        persona=persona.id,
    )
    result = await ctx.model.complete(request, ctx.guard)
    text = clean_post(f"{hook_text} {clean_post(result.text)}".strip())
    return {
        "draft": with_required_hashtags(
            fit_to_length(text, persona.max_chars), persona.rules.required_hashtags, persona.max_chars
        ),
        "records": [record("body", time.perf_counter() - started, result)],
    }
