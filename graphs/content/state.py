"""The workflow's state and the context its nodes run with."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol, TypedDict

from chorus.llm.types import LLMResult, ModelClient, SpendGuard
from chorus.models import NodeRecord, Post
from chorus.persona import PersonaSpec

Verdict = Literal["accepted", "rejected", "rewrite"]
# A person's answer to a post waiting for approval (what resumes the interrupted workflow).
Decision = Literal["approve", "reject", "request_changes"]
# Where a stored post goes next: nowhere (no account to publish on, or review rejected it), to the
# approval inbox, or straight to the outbox.
AfterStore = Literal["end", "approval", "schedule"]


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
    after_store: AfterStore
    decision: Decision
    feedback: str
    # True while a reviewer's requested changes are being written: the post exists and gets a
    # new revision instead of being stored again. `replaced_draft` is the text it replaces, which
    # the novelty check must not count against the new one.
    revising: bool
    replaced_draft: str


class PostLifecycle(Protocol):
    """The lifecycle moves the workflow makes on a stored post; each is safe to repeat (a node
    that ran before a crash runs again on resume)."""

    async def submit_for_approval(self, post_id: str) -> None:
        """accepted -> pending_approval (nothing when it is there already)."""
        ...

    async def schedule(self, post_id: str) -> None:
        """accepted | approved -> scheduled, and into the outbox (once)."""
        ...

    async def revise(self, post_id: str, text: str, problems: list[str], nodes: list[NodeRecord]) -> None:
        """changes_requested -> pending_approval with the new draft (and its review problems)."""
        ...


@dataclass
class WorkflowContext:
    """What nodes need besides state; rebuilt for every run, never checkpointed."""

    persona: PersonaSpec
    model: ModelClient  # the Router in-process, or the gateway client in a persona actor
    save_post: Callable[[Post], Awaitable[bool]]
    recent: list[dict[str, str]] = field(default_factory=list)  # {text, topic}, newest first
    guard: SpendGuard | None = None
    max_rewrites: int = 2
    # Set when the post's platform has an account to publish on: the post then goes through
    # approval (when `approval_required`) or straight to the outbox. None keeps it stored only.
    lifecycle: PostLifecycle | None = None
    account_id: str | None = None
    approval_required: bool = True
    # A page the post is about (from the generate request): it becomes the post's link card.
    source_url: str | None = None
    source_title: str | None = None


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
