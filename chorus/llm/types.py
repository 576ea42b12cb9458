"""The model-call vocabulary shared by the router, the workflow and the actors.

Kept free of the `openai` SDK so a persona actor can speak it without importing a client it
never uses (model calls go through the fleet's gateway actor; see actors/gateway.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from chorus.settings import Tier

Messages = Sequence[dict[str, str]]


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


class BudgetExceeded(Exception):
    def __init__(self, persona_id: str, spent_usd: float, budget_usd: float, needed_usd: float):
        self.persona_id = persona_id
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd
        self.needed_usd = needed_usd
        super().__init__(
            f"persona {persona_id!r} has spent ${spent_usd:.6f} of its ${budget_usd:.6f} daily "
            f"budget; the next call could cost up to ${needed_usd:.6f}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses process boundaries (gateway -> persona actor) with its fields intact.
        return (BudgetExceeded, (self.persona_id, self.spent_usd, self.budget_usd, self.needed_usd))


class TiersUnavailable(RuntimeError):
    """Every tier in the chain failed; the message lists why each one did."""


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

    async def complete(
        self,
        *,
        step: str,
        tier: Tier,
        messages: Messages,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        use_cache: bool = True,
        guard: SpendGuard | None = None,
        persona: str = "none",
    ) -> LLMResult: ...
