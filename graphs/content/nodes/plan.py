"""plan: choose the topic the persona has written about least recently."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from graphs.content.state import PostState, WorkflowContext, record


def choose_topic(topics: list[str], recent_topics: list[str]) -> str:
    """The first topic never used recently, else the one used longest ago."""
    last_use: dict[str, int] = {}
    for age, topic in enumerate(recent_topics):  # newest first: a smaller age is more recent
        last_use.setdefault(topic, age)
    return max(topics, key=lambda t: (t not in last_use, last_use.get(t, 0), -topics.index(t)))


async def plan(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    topic = choose_topic(ctx.persona.topics, [r["topic"] for r in ctx.recent])
    return {"topic": topic, "rewrites": 0, "records": [record("plan", time.perf_counter() - started)]}
