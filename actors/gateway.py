"""The model gateway: one router per cluster that every persona actor calls for model work.

Hosting the `openai` clients, the response cache and the price table here instead of in each
persona actor keeps a persona's process small and quick to start (the SDK alone is ~40 MB and
~0.4 s of imports), and gives the fleet one connection pool per tier instead of one per persona.
"""

from __future__ import annotations

import logging
import uuid

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayTaskError
from redis.exceptions import RedisError

from chorus.errors import BudgetExceeded
from chorus.llm.types import LLMResult, ModelRequest, SpendGuard
from chorus.settings import Settings

log = logging.getLogger(__name__)

GATEWAY_NAME = "chorus-gateway"

# A persona's budget as it travels to the gateway: (persona id, daily budget, job id).
Budget = tuple[str, float, str | None]


def ray_cause(exc: BaseException) -> BaseException:
    """The exception a remote call really raised, without Ray's wrapper.

    Ray re-raises a remote error as a RayTaskError whose text is the whole remote traceback
    (file paths, pid, the node's address, colour codes): fine for the server log, never for a
    job record or a client. Its `cause` is the original exception.
    """
    while isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        exc = exc.cause
    return exc


def reservation_lease_s(settings: Settings) -> float:
    """How long a call may hold its reservation: every try of one tier at the router's timeout,
    with the backoffs between them, and a margin."""
    router = settings.router
    return router.timeout_s * (router.max_retries + 1) + router.backoff_max_s * router.max_retries + 30.0


# max_task_retries: a call lost with a gateway that died is re-sent to the restarted one instead
# of failing the persona's job. The restarted gateway gives back what the dead one's calls held
# on the ledgers, so the retry is the only one charged.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=1000)  # type: ignore[call-overload]
class ModelGateway:
    def __init__(self, settings: Settings) -> None:
        from chorus.llm.router import Router
        from chorus.store.client import async_redis, sync_redis
        from chorus.store.keys import keys_for
        from chorus.store.spend import SpendLedger, take_over_reservations

        self._redis = async_redis(settings)
        self._keys = keys_for(settings)
        self._ledger = SpendLedger
        self._lease_s = reservation_lease_s(settings)
        self._store = settings.store
        # This process's reservations are told apart from a previous gateway's: when that one
        # died mid-call, none of its calls is still running, so what they held goes back now
        # (before this process takes any call), not only when their leases run out.
        role = f"gateway:{settings.ray_namespace}"
        self.holder = f"{role}:{uuid.uuid4().hex[:12]}"
        sync = sync_redis(settings)
        try:
            released = take_over_reservations(sync, self._keys, role, self.holder)
        except RedisError as exc:
            # Not a reason to refuse calls: the dead calls' leases give their holds back later.
            log.warning("could not release a previous gateway's reservations: %s", exc)
            released = 0
        finally:
            sync.close()
        if released:
            log.warning("model gateway restarted: released %d reservation(s) of calls that died", released)
        self.router = Router(settings, self._redis)

    async def complete(self, request: ModelRequest, budget: Budget | None) -> LLMResult:
        guard = None
        if budget is not None:
            persona_id, budget_usd, job_id = budget
            guard = self._ledger(
                self._redis,
                self._keys,
                persona_id,
                budget_usd,
                job_id=job_id,
                holder=self.holder,
                lease_s=self._lease_s,
                store=self._store,
            )
        return await self.router.complete(request, guard)

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

    async def complete(self, request: ModelRequest, guard: SpendGuard | None = None) -> LLMResult:
        step = request.step
        budget: Budget | None = (
            (guard.persona_id, guard.budget_usd, guard.job_id) if guard is not None else None
        )
        try:
            result: LLMResult = await self._gateway.complete.remote(request, budget)
        except RayTaskError as exc:
            cause = ray_cause(exc)
            if isinstance(cause, BudgetExceeded):
                log.info("step %s: %s", step, cause)
            else:
                log.warning("step %s: the model gateway's call failed: %s", step, exc)
            raise cause from None
        return result
