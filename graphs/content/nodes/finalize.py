"""finalize: store the post (accepted or rejected with reasons) with its costs and timings."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from chorus.models import Post
from graphs.content.state import PostState, WorkflowContext, record


async def finalize(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    nodes = state.get("records", [])
    accepted = state.get("verdict") == "accepted"
    post = Post(
        id=state["job_id"],
        persona_id=ctx.persona.id,
        platform=ctx.persona.primary_platform.name.value,
        status="accepted" if accepted else "rejected",
        text=state["draft"],
        topic=state["topic"],
        reasons=[] if accepted else state.get("problems", []),
        rewrites=state.get("rewrites", 0),
        cost_usd=sum(r.cost_usd for r in nodes),
        prompt_tokens=sum(r.prompt_tokens for r in nodes),
        completion_tokens=sum(r.completion_tokens for r in nodes),
        tiers={r.node: r.tier for r in nodes if r.tier is not None},
        nodes=nodes,
        created_at=time.time(),
    )
    own = record("finalize", time.perf_counter() - started)
    post.nodes = [*nodes, own]
    # Keyed by the job id: a retried job finds its post already there and stores nothing twice.
    await ctx.save_post(post)
    return {"post_id": post.id, "records": [own]}
