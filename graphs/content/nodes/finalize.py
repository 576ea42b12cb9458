"""finalize: store the post (accepted or rejected with reasons) with its costs and timings, or,
while a reviewer's requested changes are being written, store the new draft as its next revision.
Then say where it goes: to the approval inbox, to the outbox, or nowhere."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from chorus.models import Post
from graphs.content.state import AfterStore, PostState, WorkflowContext, record


def _after_store(ctx: WorkflowContext, accepted: bool, revising: bool) -> AfterStore:
    if ctx.lifecycle is None or ctx.account_id is None:
        return "end"
    # A new draft goes back to the person who asked for it, whatever the rules say of it: the
    # inbox shows its problems and they decide.
    if revising:
        return "approval"
    if not accepted:
        return "end"
    return "approval" if ctx.approval_required else "schedule"


async def finalize(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    nodes = state.get("records", [])
    accepted = state.get("verdict") == "accepted"
    revising = state.get("revising", False)
    after = _after_store(ctx, accepted, revising)
    if revising and ctx.lifecycle is not None:
        own = record("finalize", time.perf_counter() - started)
        problems = [] if accepted else state.get("problems", [])
        await ctx.lifecycle.revise(state["job_id"], state["draft"], problems, [*nodes, own])
        return {"post_id": state["job_id"], "records": [own], "after_store": after, "revising": False}
    post = Post(
        id=state["job_id"],
        persona_id=ctx.persona.id,
        platform=ctx.persona.primary_platform.name.value,
        status="accepted" if accepted else "rejected",
        state="accepted" if accepted else "rejected",
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
        account_id=ctx.account_id if accepted else None,
        source_url=ctx.source_url,
        source_title=ctx.source_title,
    )
    own = record("finalize", time.perf_counter() - started)
    post.nodes = [*nodes, own]
    # Keyed by the job id: a retried job finds its post already there and stores nothing twice.
    await ctx.save_post(post)
    return {"post_id": post.id, "records": [own], "after_store": after}
