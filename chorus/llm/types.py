"""The model-call vocabulary shared by the router, the workflow and the actors.

Kept free of the `openai` SDK so a persona actor can speak it without importing a client it
never uses (model calls go through the fleet's gateway actor; see actors/gateway.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from chorus.settings import Tier

Messages = Sequence[dict[str, str]]


class ModelRequest(BaseModel):
    """One model call as a workflow step asks for it: what the router, the gateway (across a
    Ray call, as it is) and every `ModelClient` take, so the call is written once.

    The budget is not part of it: a `SpendGuard` goes beside the request, since a ledger is a
    live Redis object that does not travel.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str = Field(description="the workflow step (hook, body, review, rewrite...): metrics and logs")
    tier: Tier = Field(description="the tier the step asks for; the router may fall back to the other")
    messages: list[dict[str, str]] = Field(description="chat messages, {role, content}")
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: list[str] | None = None
    seed: int | None = None
    use_cache: bool = Field(True, description="serve an identical earlier call from the response cache")
    persona: str = Field("none", description="the persona the call is for (metric tag)")


class LLMResult(BaseModel):
    """What every model call returns, whether it hit the cache, fell back or went as asked."""

    step: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    tier_requested: Tier
    tier_used: Tier
    model: str
    cache_hit: bool
    fallback_reason: str | None = None
    attempts: int = 0


class SpendGuard(Protocol):
    """A persona's budget: checked before each paid call, told what the call really cost.

    `reserve` holds the call's worst case and returns the reservation's id; `settle` replaces
    that reservation by the real cost. `job_id` is the job the calls are for, when there is one.
    """

    persona_id: str
    budget_usd: float
    job_id: str | None

    async def reserve(self, amount_usd: float) -> str: ...

    async def settle(self, reservation: str, actual_usd: float) -> None: ...


class ModelClient(Protocol):
    """What workflow nodes call: the Router in-process, or the gateway from a persona actor."""

    async def complete(self, request: ModelRequest, guard: SpendGuard | None = None) -> LLMResult: ...
