"""Smart model selection: route each workflow step to a tier, retry, fall back, cost and cache.

Both tiers are OpenAI-compatible endpoints reached with the official `openai` client: the premium
tier is any hosted API, the local tier is Chorus's own Serve deployment (llama.cpp or vLLM).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import openai
import redis.asyncio as aioredis

from chorus import metrics
from chorus.errors import TiersUnavailable
from chorus.llm.cache import CachedResponse, ResponseCache, cache_key
from chorus.llm.pricing import PriceTable, max_prompt_tokens
from chorus.llm.types import LLMResult, Messages, ModelRequest, SpendGuard
from chorus.settings import Settings, Tier
from chorus.store.keys import keys_for

log = logging.getLogger(__name__)

__all__ = ["LLMResult", "Router", "max_prompt_tokens"]

_RETRYABLE = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)


@dataclass(frozen=True)
class _Endpoint:
    tier: Tier
    model: str
    client: openai.AsyncOpenAI


class Router:
    def __init__(
        self,
        settings: Settings,
        redis_client: aioredis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.prices = PriceTable(settings.pricing)
        timeout = settings.router.timeout_s
        # Retries are the router's own (with fallback between them), so the SDK's are off.
        if settings.local.api_key is None:
            log.warning("local.api_key is not set (CHORUS_LOCAL__API_KEY): the local tier will refuse calls")
        self.local = _Endpoint(
            "local",
            settings.local.model,
            openai.AsyncOpenAI(
                base_url=settings.local.base_url,
                api_key=settings.local.service_token(),
                timeout=timeout,
                max_retries=0,
            ),
        )
        self.premium: _Endpoint | None = None
        if settings.premium.configured:
            assert settings.premium.api_key is not None
            self.premium = _Endpoint(
                "premium",
                settings.premium.model,
                openai.AsyncOpenAI(
                    base_url=settings.premium.base_url,
                    api_key=settings.premium.api_key.get_secret_value(),
                    timeout=timeout,
                    max_retries=0,
                ),
            )
        else:
            log.warning(
                "premium tier not configured (set CHORUS_PREMIUM__API_KEY): "
                "steps routed to premium run on the local tier"
            )
        self.cache = (
            ResponseCache(redis_client, keys_for(settings), settings.cache.ttl_s)
            if redis_client is not None and settings.cache.enabled
            else None
        )

    async def aclose(self) -> None:
        await self.local.client.close()
        if self.premium is not None:
            await self.premium.client.close()

    def _chain(self, tier: Tier) -> tuple[list[_Endpoint], str | None]:
        if self.premium is None:
            reason = "premium_not_configured" if tier == "premium" else None
            return [self.local], reason
        if tier == "premium":
            return [self.premium, self.local], None
        return [self.local, self.premium], None

    async def complete(self, request: ModelRequest, guard: SpendGuard | None = None) -> LLMResult:
        started = time.perf_counter()
        step, tier, persona = request.step, request.tier, request.persona
        chain, fallback_reason = self._chain(tier)
        sampling: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": list(request.stop) if request.stop else None,
            "seed": request.seed,
        }
        messages = [dict(m) for m in request.messages]
        max_tokens = request.max_tokens
        use_cache = request.use_cache

        key = cache_key(chain[0].model, messages, sampling) if self.cache and use_cache else None
        if key is not None and self.cache is not None:
            hit = await self.cache.get(key)
            if hit is not None:
                return self._finish(
                    persona,
                    LLMResult(
                        step=step,
                        text=hit.text,
                        prompt_tokens=hit.prompt_tokens,
                        completion_tokens=hit.completion_tokens,
                        cost_usd=0.0,
                        latency_s=time.perf_counter() - started,
                        tier_requested=tier,
                        tier_used="local" if hit.tier == "local" else "premium",
                        model=hit.model,
                        cache_hit=True,
                        fallback_reason=fallback_reason,
                    ),
                )

        failures: list[str] = []
        attempts = 0
        for endpoint in chain:
            reserved = self.prices.worst_case(endpoint.tier, endpoint.model, messages, max_tokens)
            reservation = await guard.reserve(reserved) if guard is not None else None
            try:
                text, usage, tries = await self._call_with_retries(step, endpoint, messages, sampling)
            except Exception as exc:
                attempts += self.settings.router.max_retries + 1
                if guard is not None and reservation is not None:
                    await guard.settle(reservation, 0.0)
                failures.append(f"{endpoint.tier}: {type(exc).__name__}: {exc}")
                fallback_reason = f"{endpoint.tier}_error: {type(exc).__name__}"
                log.warning("step %s: %s tier failed (%s); trying the next tier", step, endpoint.tier, exc)
                continue
            attempts += tries
            cost = self.prices.cost(endpoint.tier, endpoint.model, *usage)
            if guard is not None and reservation is not None:
                await guard.settle(reservation, cost)
            if key is not None and self.cache is not None and endpoint is chain[0]:
                await self.cache.put(
                    key,
                    CachedResponse(
                        text=text,
                        prompt_tokens=usage[0],
                        completion_tokens=usage[1],
                        model=endpoint.model,
                        tier=endpoint.tier,
                    ),
                )
            return self._finish(
                persona,
                LLMResult(
                    step=step,
                    text=text,
                    prompt_tokens=usage[0],
                    completion_tokens=usage[1],
                    cost_usd=cost,
                    latency_s=time.perf_counter() - started,
                    tier_requested=tier,
                    tier_used=endpoint.tier,
                    model=endpoint.model,
                    cache_hit=False,
                    fallback_reason=fallback_reason if endpoint.tier != tier else None,
                    attempts=attempts,
                ),
            )
        raise TiersUnavailable(f"step {step}: every tier failed: " + "; ".join(failures))

    def _finish(self, persona: str, result: LLMResult) -> LLMResult:
        cache = "hit" if result.cache_hit else "miss"
        metrics.inc(
            "chorus_llm_calls_total", step=result.step, tier=result.tier_used, model=result.model, cache=cache
        )
        metrics.observe(
            "chorus_llm_latency_seconds",
            result.latency_s,
            step=result.step,
            tier=result.tier_used,
            cache=cache,
        )
        metrics.inc(
            "chorus_llm_cost_usd_total",
            result.cost_usd,
            persona=persona,
            step=result.step,
            tier=result.tier_used,
            model=result.model,
        )
        metrics.inc(
            "chorus_llm_premium_equivalent_usd_total",
            self.premium_equivalent(result),
            persona=persona,
            tier=result.tier_used,
            cache=cache,
        )
        if not result.cache_hit:
            for direction, count in (("in", result.prompt_tokens), ("out", result.completion_tokens)):
                metrics.inc(
                    "chorus_llm_tokens_total",
                    count,
                    persona=persona,
                    tier=result.tier_used,
                    model=result.model,
                    direction=direction,
                )
        if result.fallback_reason is not None:
            metrics.inc(
                "chorus_llm_fallbacks_total",
                step=result.step,
                tier=result.tier_used,
                reason=result.fallback_reason.split(":")[0],
            )
        return result

    def premium_equivalent(self, result: LLMResult) -> float:
        """What the call would have cost on the premium tier: the baseline savings are shown against."""
        model = self.settings.premium.model
        return self.prices.cost("premium", model, result.prompt_tokens, result.completion_tokens)

    async def _call_with_retries(
        self, step: str, endpoint: _Endpoint, messages: Messages, sampling: dict[str, Any]
    ) -> tuple[str, tuple[int, int], int]:
        cfg = self.settings.router
        for attempt in range(cfg.max_retries + 1):
            try:
                text, usage = await self._call(endpoint, messages, sampling)
                return text, usage, attempt + 1
            except _RETRYABLE as exc:
                if attempt == cfg.max_retries:
                    raise
                metrics.inc(
                    "chorus_llm_retries_total", step=step, tier=endpoint.tier, reason=type(exc).__name__
                )
                delay = min(cfg.backoff_s * 2**attempt, cfg.backoff_max_s)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")

    async def _call(
        self, endpoint: _Endpoint, messages: Messages, sampling: dict[str, Any]
    ) -> tuple[str, tuple[int, int]]:
        response = await endpoint.client.chat.completions.create(
            model=endpoint.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=sampling["max_tokens"],
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            stop=sampling["stop"],
            seed=sampling["seed"],
        )
        text = response.choices[0].message.content or ""
        usage = response.usage
        if usage is None:
            raise openai.APIError("endpoint returned no usage", request=None, body=None)  # type: ignore[arg-type]
        return text, (usage.prompt_tokens, usage.completion_tokens)
