"""The model gateway: one router per cluster that every persona actor calls for model work.

Hosting the `openai` clients, the response cache and the price table here instead of in each
persona actor keeps a persona's process small and quick to start (the SDK alone is ~40 MB and
~0.4 s of imports), and gives the fleet one connection pool per tier instead of one per persona.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray
from ray.actor import ActorHandle

from chorus.llm.types import LLMResult, Messages, SpendGuard
from chorus.settings import Settings, Tier

GATEWAY_NAME = "chorus-gateway"


# max_task_retries: a call lost with a gateway that died is re-sent to the restarted one instead
# of failing the persona's job. The lost call may have reached the model, so a retry can pay twice;
# its reservation stays on the persona's ledger, which errs on the side of the budget.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=1000)  # type: ignore[call-overload]
class ModelGateway:
    def __init__(self, settings: Settings) -> None:
        from chorus.llm.router import Router
        from chorus.state import SpendLedger
        from chorus.store import async_redis, keys_for

        self._redis = async_redis(settings)
        self._keys = keys_for(settings)
        self._ledger = SpendLedger
        self.router = Router(settings, self._redis)

    async def complete(self, request: dict[str, Any], budget: tuple[str, float] | None) -> LLMResult:
        guard = self._ledger(self._redis, self._keys, *budget) if budget is not None else None
        return await self.router.complete(**request, guard=guard)

    async def ping(self) -> bool:
        return True


def get_gateway(settings: Settings) -> ActorHandle:
    handle: ActorHandle = ModelGateway.options(  # type: ignore[attr-defined]
        name=GATEWAY_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings)
    return handle


class GatewayClient:
    """The ModelClient a persona actor hands its workflow: the router's call, one hop away.

    Budgets travel as (persona, daily budget); the gateway checks them against the same Redis
    ledger, so spend control is exactly what the in-process router does.
    """

    def __init__(self, gateway: ActorHandle) -> None:
        self._gateway = gateway

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
    ) -> LLMResult:
        request = {
            "step": step,
            "tier": tier,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": list(stop) if stop else None,
            "seed": seed,
            "use_cache": use_cache,
            "persona": persona,
        }
        budget = (guard.persona_id, guard.budget_usd) if guard is not None else None
        result: LLMResult = await self._gateway.complete.remote(request, budget)
        return result
