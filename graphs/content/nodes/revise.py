"""revise: a new draft written from the reviewer's feedback (requested changes), which then goes
through the rule review like any draft and back to the inbox."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from chorus.llm.types import ModelRequest
from graphs.content.nodes.body import max_tokens_for
from graphs.content.prompts import STOP, clean_post, fit_to_length, revision_messages, with_required_hashtags
from graphs.content.state import PostState, WorkflowContext, record


async def revise(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    persona = ctx.persona
    feedback = state.get("feedback", "")
    request = ModelRequest(
        step="rewrite",
        tier=persona.model_policy.rewrite,
        messages=revision_messages(persona, state["topic"], feedback),
        max_tokens=max_tokens_for(persona.max_chars),
        temperature=0.9,
        stop=list(STOP),
        # A reviewer asked for something new: a cached answer would be the draft they sent back.
        use_cache=False,
        persona=persona.id,
    )
    result = await ctx.model.complete(request, ctx.guard)
    return {
        "draft": with_required_hashtags(
            fit_to_length(clean_post(result.text), persona.max_chars),
            persona.rules.required_hashtags,
            persona.max_chars,
        ),
        "replaced_draft": state["draft"],
        "revising": True,
        "rewrites": 0,
        "records": [record("revise", time.perf_counter() - started, result)],
    }
