"""await_approval: the human step. The post goes to the approval inbox and the workflow stops
with a LangGraph `interrupt()`; the reviewer's answer resumes it from the Redis checkpoint, in
whichever persona actor runs the job next (after a passivation or a crash as well)."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from graphs.content.state import PostState, WorkflowContext, record


async def await_approval(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    assert ctx.lifecycle is not None, "finalize routes here only with a lifecycle"
    # Runs again from the top on resume: the move is a no-op the second time.
    await ctx.lifecycle.submit_for_approval(state["job_id"])
    answer = interrupt(
        {"post_id": state["job_id"], "text": state["draft"], "problems": state.get("problems", [])}
    )
    return {
        "decision": answer["decision"],
        "feedback": answer.get("feedback") or "",
        "records": [record("await_approval", time.perf_counter() - started)],
    }
