"""schedule: an approved (or approval-free) post goes into the outbox, due at the time the
approver chose or the persona's next cadence slot. Nothing publishes inline in the workflow."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from graphs.content.state import PostState, WorkflowContext, record


async def schedule(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    assert ctx.lifecycle is not None, "only reached with a lifecycle"
    await ctx.lifecycle.schedule(state["job_id"])
    return {"records": [record("schedule", time.perf_counter() - started)]}
