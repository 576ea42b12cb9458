"""The workflow's state and the context its nodes run with."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal, TypedDict

from chorus.llm.types import LLMResult, ModelClient, SpendGuard
from chorus.models import NodeRecord, Post
from chorus.persona import PersonaSpec

Verdict = Literal["accepted", "rejected", "rewrite"]


class PostState(TypedDict, total=False):
    job_id: str
    topic: str
    hook: str
    draft: str
    problems: list[str]
    rewrites: int
    verdict: Verdict
    # Each node appends its own record; checkpoints keep them, so a resumed run reports all nodes.
    records: Annotated[list[NodeRecord], operator.add]
    post_id: str


@dataclass
class WorkflowContext:
    """What nodes need besides state; rebuilt for every run, never checkpointed."""

    persona: PersonaSpec
    model: ModelClient  # the Router in-process, or the gateway client in a persona actor
    save_post: Callable[[Post], Awaitable[bool]]
    recent: list[dict[str, str]] = field(default_factory=list)  # {text, topic}, newest first
    guard: SpendGuard | None = None
    max_rewrites: int = 2


def record(node: str, duration_s: float, result: LLMResult | None = None) -> NodeRecord:
    if result is None:
        return NodeRecord(node=node, duration_s=duration_s)
    return NodeRecord(
        node=node,
        duration_s=duration_s,
        tier=result.tier_used,
        model=result.model,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cost_usd=result.cost_usd,
        cache_hit=result.cache_hit,
        fallback_reason=result.fallback_reason,
    )
