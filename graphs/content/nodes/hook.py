"""hook: the post's opening line (premium tier by default: it decides whether anyone reads on)."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from chorus.llm.types import ModelRequest
from graphs.content.prompts import STOP, first_line, hook_messages
from graphs.content.state import PostState, WorkflowContext, record

# A job's first paid call: the fleet refuses a new job whose budget cannot hold its worst case.
HOOK_MAX_TOKENS = 40


async def hook(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    request = ModelRequest(
        step="hook",
        tier=ctx.persona.model_policy.hook,
        messages=hook_messages(ctx.persona, state["topic"]),
        max_tokens=HOOK_MAX_TOKENS,
        temperature=0.7,
        stop=list(STOP),
        use_cache="hook" not in ctx.persona.rules.no_cache_steps,
        persona=ctx.persona.id,
    )
    result = await ctx.model.complete(request, ctx.guard)
    return {
        "hook": first_line(result.text),
        "records": [record("hook", time.perf_counter() - started, result)],
    }
