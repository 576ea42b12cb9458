"""The router over real tiers: policy, fallback, retries, costs and the Redis cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chorus.errors import BudgetExceeded
from chorus.llm.pricing import PriceTable
from chorus.llm.router import LLMResult, Router, max_prompt_tokens
from chorus.llm.types import ModelRequest
from chorus.settings import Settings
from chorus.store.client import sync_redis
from chorus.store.keys import keys_for
from chorus.store.spend import SpendLedger, take_over_reservations
from tests.support.processes import free_port
from tests.support.tiers import PREMIUM_PRICE


def _messages(tag: str | None = None) -> list[dict[str, str]]:
    # A unique line keeps one test's cache entries out of another's.
    tag = tag or uuid.uuid4().hex
    return [{"role": "user", "content": f"Notes {tag}.\n\nPost: Fresh beans today. #coffee\n###\nPost:"}]


@pytest.fixture()
async def aredis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


def _router(settings: Settings, client: aioredis.Redis | None, **changes: object) -> Router:
    return Router(settings.model_copy(update=changes), client)


async def test_policy_routes_each_step_to_its_tier(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    router = _router(settings, aredis)
    premium = await router.complete(
        ModelRequest(step="hook", tier="premium", messages=_messages(), max_tokens=8)
    )
    local = await router.complete(ModelRequest(step="body", tier="local", messages=_messages(), max_tokens=8))
    assert (premium.tier_used, premium.fallback_reason) == ("premium", None)
    assert (local.tier_used, local.fallback_reason) == ("local", None)
    assert premium.text and local.text
    await router.aclose()


async def test_costs_follow_the_price_table(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    router = _router(settings, aredis)
    premium = await router.complete(
        ModelRequest(step="hook", tier="premium", messages=_messages(), max_tokens=8)
    )
    local = await router.complete(ModelRequest(step="body", tier="local", messages=_messages(), max_tokens=8))
    expected_premium = (
        premium.prompt_tokens * PREMIUM_PRICE["input_per_mtok"]
        + premium.completion_tokens * PREMIUM_PRICE["output_per_mtok"]
    ) / 1e6
    assert premium.cost_usd == pytest.approx(expected_premium)
    assert local.cost_usd == pytest.approx(
        (local.prompt_tokens + local.completion_tokens) * settings.pricing.local_per_mtok / 1e6
    )
    assert premium.prompt_tokens > 0 and premium.completion_tokens > 0
    await router.aclose()


async def test_repeated_call_is_a_free_cache_hit(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    router = _router(settings, aredis)
    messages = _messages()
    first = await router.complete(
        ModelRequest(step="body", tier="local", messages=messages, max_tokens=12, temperature=0)
    )
    again = await router.complete(
        ModelRequest(step="body", tier="local", messages=messages, max_tokens=12, temperature=0)
    )
    assert not first.cache_hit and first.cost_usd > 0
    assert again.cache_hit and again.cost_usd == 0
    assert (again.text, again.prompt_tokens, again.completion_tokens) == (
        first.text,
        first.prompt_tokens,
        first.completion_tokens,
    )
    # Other sampling parameters are another request, and a step may opt out.
    other = await router.complete(
        ModelRequest(step="body", tier="local", messages=messages, max_tokens=13, temperature=0)
    )
    assert not other.cache_hit
    opted_out = await router.complete(
        ModelRequest(
            step="body",
            tier="local",
            messages=messages,
            max_tokens=12,
            temperature=0,
            use_cache=False,
        )
    )
    assert not opted_out.cache_hit and opted_out.cost_usd > 0
    await router.aclose()


async def test_premium_down_falls_back_to_local(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    down = settings.model_copy(update={"premium": settings.premium.model_copy(update={"base_url": closed})})
    router = Router(down, aredis)
    result = await router.complete(
        ModelRequest(step="hook", tier="premium", messages=_messages(), max_tokens=8)
    )
    assert result.tier_requested == "premium"
    assert result.tier_used == "local"
    assert result.fallback_reason == "premium_error: APIConnectionError"
    # The premium tier was tried max_retries + 1 times before the local tier answered once.
    assert result.attempts == settings.router.max_retries + 2
    await router.aclose()


async def test_no_premium_key_uses_local_and_says_so(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    unkeyed = settings.model_copy(update={"premium": settings.premium.model_copy(update={"api_key": None})})
    router = Router(unkeyed, aredis)
    assert router.premium is None
    result = await router.complete(
        ModelRequest(step="hook", tier="premium", messages=_messages(), max_tokens=8)
    )
    assert (result.tier_used, result.fallback_reason) == ("local", "premium_not_configured")
    await router.aclose()


class _Ledger:
    """A spend guard that records what the router reserves and settles."""

    persona_id = "p"
    job_id = None

    def __init__(self, budget: float) -> None:
        self.budget_usd = budget
        self.budget, self.spent, self.calls = budget, 0.0, []
        self.held: dict[str, float] = {}

    async def reserve(self, amount_usd: float) -> str:
        if self.spent + amount_usd > self.budget:
            raise BudgetExceeded("p", self.spent, self.budget, amount_usd)
        self.spent += amount_usd
        self.calls.append(("reserve", amount_usd))
        reservation = f"r{len(self.held)}"
        self.held[reservation] = amount_usd
        return reservation

    async def settle(self, reservation: str, actual_usd: float) -> None:
        self.spent += actual_usd - self.held.pop(reservation)
        self.calls.append(("settle", actual_usd))


async def test_guard_reserves_an_upper_bound_then_settles_the_real_cost(
    settings: Settings, local_tier: str, aredis: aioredis.Redis
) -> None:
    router = _router(settings, aredis)
    ledger = _Ledger(budget=1.0)
    messages = _messages()
    result: LLMResult = await router.complete(
        ModelRequest(
            step="hook",
            tier="premium",
            messages=messages,
            max_tokens=8,
        ),
        ledger,
    )
    (_, reserved), (_, settled) = ledger.calls
    assert reserved == pytest.approx(
        PriceTable(settings.pricing).cost("premium", settings.premium.model, max_prompt_tokens(messages), 8)
    )
    assert settled == pytest.approx(result.cost_usd) and settled <= reserved
    assert ledger.spent == pytest.approx(result.cost_usd)
    # A budget below the worst case refuses before any call is made or paid.
    broke = _Ledger(budget=reserved / 2)
    with pytest.raises(BudgetExceeded):
        await router.complete(
            ModelRequest(step="hook", tier="premium", messages=_messages(), max_tokens=8), broke
        )
    assert broke.spent == 0 and broke.calls == []
    await router.aclose()


async def test_a_reservation_no_call_settles_is_given_back_when_its_lease_runs_out(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    keys = keys_for(settings)
    persona = f"lease-{uuid.uuid4().hex[:8]}"
    dead = SpendLedger(aredis, keys, persona, 1.0, job_id="job_dead", lease_s=0.2)
    await dead.reserve(0.4)  # its call died: nothing will settle it
    live = SpendLedger(aredis, keys, persona, 1.0, job_id="job_live")
    settled = await live.reserve(0.3)
    await live.settle(settled, 0.1)
    assert await live.spent_today() == pytest.approx(0.5)
    assert [r.job_id for r in await live.outstanding()] == ["job_dead"]
    await asyncio.sleep(0.3)
    # The dead hold no longer counts against the budget: a reservation that needs its room fits.
    third = await live.reserve(0.85)
    assert [r.job_id for r in await live.outstanding()] == ["job_live"]
    await live.settle(third, 0.05)
    assert await live.spent_today() == pytest.approx(0.15)
    assert await live.outstanding() == []
    assert await live.job_spend("job_live") == pytest.approx(0.15)
    # A call settled after its lease ran out was still made: it is charged in full.
    late = SpendLedger(aredis, keys, persona, 1.0, lease_s=0.0)
    late_id = await late.reserve(0.2)
    assert await late.release_expired() == 1 and await late.spent_today() == pytest.approx(0.15)
    await late.settle(late_id, 0.02)
    assert await late.spent_today() == pytest.approx(0.17)


async def test_a_restarted_holder_gives_back_what_its_dead_calls_held(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    keys = keys_for(settings)
    persona, role = f"holder-{uuid.uuid4().hex[:8]}", f"gateway:test-{uuid.uuid4().hex[:8]}"
    sync = sync_redis(settings)
    try:
        assert take_over_reservations(sync, keys, role, f"{role}:first") == 0
        first = SpendLedger(aredis, keys, persona, 1.0, holder=f"{role}:first")
        other = SpendLedger(aredis, keys, persona, 1.0, holder="someone-else")
        await first.reserve(0.3)  # in flight when its process died
        kept = await other.reserve(0.2)
        assert take_over_reservations(sync, keys, role, f"{role}:second") == 1
    finally:
        sync.close()
    assert [r.holder for r in await first.outstanding()] == ["someone-else"]
    assert await first.spent_today() == pytest.approx(0.2)
    await other.settle(kept, 0.1)
    assert await first.spent_today() == pytest.approx(0.1) and await first.outstanding() == []
