"""Benchmark the llama.cpp local tier: serving cost, router overhead and cache hits.

Run from the repository root::

    python bench/local_tier.py [--runs N] [--max-tokens M]

One run measures, each against a baseline taken in the same run:

1. generation tokens/s: raw ``llama_cpp.Llama`` in this process (baseline) vs the Ray Serve
   deployment over HTTP with httpx and through the official ``openai`` client (target >= 0.9x);
2. ``Router.complete``'s own overhead vs a direct ``openai`` call to the same endpoint
   (max_tokens=1, cache off; target < 5 ms);
3. a Redis cache hit through ``Router.complete`` (target < 5 ms).

The raw model and the Serve replica never run at the same time: the raw baseline is measured
first and freed before Ray starts, so both get the machine's cores to themselves. Everything this
script starts (redis-server, Ray, Serve) is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/...`

from bench.harness import (
    SERVICE_KEY,
    Row,
    console,
    free_port,
    median,
    ray_serve_tier,
    report,
    spread,
    throwaway_redis,
)
from chorus.llm.router import Router
from chorus.llm.types import ModelRequest
from chorus.settings import Settings, load_settings
from chorus.store.client import async_redis
from serve.llm.engines.llama_cpp import gemma_model_path

# A few-shot social-post document for the base model to continue. No stop sequence is used, and
# this prompt carries on well past 64 tokens without an end-of-text token, so every timed call
# generates exactly max_tokens (checked on every call).
PROMPT = (
    "Social media posts by Ember & Oak Coffee, a neighbourhood roaster and café.\n\n"
    "Post: New beans from Guji, Ethiopia landed today: blueberry, jasmine and a honey finish. "
    "Pour-overs all weekend. #coffee #specialtycoffee\n\n"
    "Post: Cold brew is back on tap. Twenty hours of steeping, zero shortcuts. Come early, it "
    "goes fast. #coldbrew\n\n"
    "Post: Our head roaster Maya walks you through a light roast from green bean to first "
    "crack in tonight's stories. #roasting\n\n"
    "Post:"
)
CHAT_MESSAGES = [
    {"role": "system", "content": "You write short, friendly social posts for a coffee roaster."},
    {"role": "user", "content": PROMPT},
]
TEMPERATURE = 0.0
TOP_P = 0.95
TOKENS_TARGET = 0.9  # served tokens/s as a fraction of raw
OVERHEAD_TARGET_MS = 5.0
CACHE_HIT_TARGET_MS = 5.0
# Untimed calls before each measurement: page in the weights, fill llama.cpp's prompt cache, open
# the clients' connections and let the replica's first requests (slower) pass.
WARMUP = 2


def _check_tokens(path: str, got: int, want: int) -> None:
    if got != want:
        raise SystemExit(
            f"{path}: generated {got} tokens, expected exactly {want} (the model ended early; "
            "lower --max-tokens)"
        )


# --- 1a. raw llama.cpp -------------------------------------------------------------------------


def bench_raw(model: Path, settings: Settings, runs: int, max_tokens: int) -> list[float]:
    """Tokens/s of in-process llama.cpp on the same GGUF, threads, context and sampling."""
    from llama_cpp import Llama

    tier = settings.local
    llm = Llama(
        model_path=str(model),
        n_ctx=tier.context_tokens,
        n_threads=tier.threads,
        n_threads_batch=tier.threads,
        verbose=False,
    )

    def once(model: Llama) -> tuple[float, int]:
        started = time.perf_counter()
        out: Any = model.create_completion(
            PROMPT, max_tokens=max_tokens, temperature=TEMPERATURE, top_p=TOP_P, stop=None
        )
        elapsed = time.perf_counter() - started
        return elapsed, int(out["usage"]["completion_tokens"])

    for _ in range(WARMUP):
        once(llm)
    rates = []
    for _ in range(runs):
        elapsed, tokens = once(llm)
        _check_tokens("raw llama.cpp", tokens, max_tokens)
        rates.append(tokens / elapsed)
    llm.close()
    del llm
    gc.collect()
    return rates


# --- 1b/1c. through Ray Serve -----------------------------------------------------------------


def bench_served(settings: Settings, runs: int, max_tokens: int) -> tuple[list[float], list[float]]:
    """Tokens/s over HTTP with httpx and with the openai client, interleaved run by run."""
    base = settings.local.base_url.rstrip("/")
    body = {
        "model": settings.local.model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
    }
    http = httpx.Client(timeout=120, headers=settings.local.auth_headers())
    client = openai.OpenAI(
        base_url=base, api_key=settings.local.service_token(), max_retries=0, timeout=120
    )

    def via_httpx() -> tuple[float, int]:
        started = time.perf_counter()
        response = http.post(f"{base}/completions", json=body)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed, int(response.json()["usage"]["completion_tokens"])

    def via_openai() -> tuple[float, int]:
        started = time.perf_counter()
        out = client.completions.create(
            model=settings.local.model,
            prompt=PROMPT,
            max_tokens=max_tokens,
            temperature=TEMPERATURE,
            top_p=TOP_P,
        )
        elapsed = time.perf_counter() - started
        assert out.usage is not None
        return elapsed, out.usage.completion_tokens

    for _ in range(WARMUP):
        via_httpx()
        via_openai()
    httpx_rates: list[float] = []
    openai_rates: list[float] = []
    try:
        for _ in range(runs):
            for name, call, rates in (
                ("Serve + httpx", via_httpx, httpx_rates),
                ("Serve + openai", via_openai, openai_rates),
            ):
                elapsed, tokens = call()
                _check_tokens(name, tokens, max_tokens)
                rates.append(tokens / elapsed)
    finally:
        http.close()
        client.close()
    return httpx_rates, openai_rates


# --- 2. router overhead, 3. cache hits ----------------------------------------------------------


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def bench_router(settings: Settings, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Returns (router ms, direct openai ms, cache-hit ms)."""
    redis_client = async_redis(settings)
    router = Router(settings, redis_client)
    direct = openai.AsyncOpenAI(
        base_url=settings.local.base_url,
        api_key=settings.local.service_token(),
        timeout=settings.router.timeout_s,
        max_retries=0,
    )
    request: dict[str, Any] = {"max_tokens": 1, "temperature": TEMPERATURE, "top_p": TOP_P}

    async def via_router() -> Any:
        return await router.complete(
            ModelRequest(step="bench", tier="local", messages=CHAT_MESSAGES, use_cache=False, **request)
        )

    async def via_direct() -> Any:
        return await direct.chat.completions.create(
            model=settings.local.model,
            messages=CHAT_MESSAGES,  # type: ignore[arg-type]
            stop=None,
            seed=None,
            **request,
        )

    router_ms: list[float] = []
    direct_ms: list[float] = []
    hit_ms: list[float] = []
    try:
        for _ in range(WARMUP):
            await via_router()
            await via_direct()
        for i in range(runs):
            # Alternate which goes first so neither always follows the other.
            order = [(via_router, router_ms), (via_direct, direct_ms)]
            for call, sink in order if i % 2 == 0 else reversed(order):
                ms, _ = await _timed(call)
                sink.append(ms)

        for i in range(runs):
            # A fresh key each round (the seed is part of it): the first call misses and fills
            # the cache, the second one is timed and must be a hit.
            async def cached(seed: int = i) -> Any:
                return await router.complete(
                    ModelRequest(
                        step="bench",
                        tier="local",
                        messages=CHAT_MESSAGES,
                        seed=seed,
                        use_cache=True,
                        **request,
                    )
                )

            _, first = await _timed(cached)
            ms, second = await _timed(cached)
            if first.cache_hit or not second.cache_hit:
                raise SystemExit(
                    f"cache round {i}: expected a miss then a hit, got "
                    f"cache_hit={first.cache_hit} then {second.cache_hit}"
                )
            hit_ms.append(ms)
    finally:
        await router.aclose()
        await direct.close()
        await redis_client.aclose()
    return router_ms, direct_ms, hit_ms


# --- infrastructure -----------------------------------------------------------------------------


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(when: str, *, busy_below: float = 0.15, seconds: int = 3, limit_s: int = 90) -> None:
    """Wait (bounded) until the machine's CPUs have been mostly idle for a few seconds."""
    start = _cpu_times()
    if start is None:
        return
    began, quiet, busy = time.monotonic(), 0, 1.0
    while time.monotonic() - began < limit_s:
        time.sleep(1)
        now = _cpu_times()
        assert now is not None
        busy = (now[0] - start[0]) / max(now[1] - start[1], 1)
        start = now
        quiet = quiet + 1 if busy < busy_below else 0
        if quiet >= seconds:
            console.print(f"CPUs idle {when} (waited {time.monotonic() - began:.0f} s)")
            return
    console.print(
        f"[yellow]CPUs still {busy:.0%} busy {when} after {limit_s} s: something else is "
        "running, results will be noisy[/yellow]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per measurement")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per call")
    parser.add_argument("--show-runs", action="store_true", help="print every timed run's value")
    args = parser.parse_args(argv)
    runs: int = max(1, args.runs)
    max_tokens: int = args.max_tokens

    with throwaway_redis() as redis_url:
        serve_port = free_port()
        settings = load_settings(
            redis={"url": redis_url, "key_prefix": "chorusbench"},
            serve={"port": serve_port},
            local={
                "base_url": f"http://127.0.0.1:{serve_port}/llm/v1",
                "backend": "llama_cpp",
                "api_key": SERVICE_KEY,
            },
            # The router must not reach a hosted API: the local tier is the whole chain.
            premium={"api_key": None},
            # Always a private Ray: with no address, ray.init attaches to any cluster that
            # `ray start` left on this machine, and the Serve shutdown below would take that
            # cluster's applications down with it.
            ray_address="local",
            cache={"enabled": True},
        )
        tier = settings.local
        model = gemma_model_path(tier.model_dir)

        console.print(
            f"cores: {os.cpu_count()}  |  load average (1 min): {os.getloadavg()[0]:.2f}  |  "
            f"python {platform.python_version()}  |  "
            f"model: {model} ({model.stat().st_size / 2**20:.0f} MiB)\n"
            f"settings: threads={tier.threads} context_tokens={tier.context_tokens} "
            f"replicas={tier.replicas} model={tier.model!r}  |  sampling: temperature="
            f"{TEMPERATURE} top_p={TOP_P} max_tokens={max_tokens}, no stop  |  runs={runs}"
        )

        wait_for_quiet("before the raw baseline")
        console.print("[1/3] raw llama.cpp in-process ...")
        raw = bench_raw(model, settings, runs, max_tokens)

        console.print("starting Ray, Serve and the local tier ...")
        with ray_serve_tier(settings):
            # Ray's dashboard and agents are busy for a while after start: let them settle so
            # what is measured is Serve's steady state, not its start-up.
            wait_for_quiet("after Ray and Serve started")
            console.print("[1/3] Serve over HTTP (httpx, openai) ...")
            served_httpx, served_openai = bench_served(settings, runs, max_tokens)
            console.print("[2/3, 3/3] router overhead and cache hits ...")
            router_ms, direct_ms, hit_ms = asyncio.run(bench_router(settings, runs))

    if args.show_runs:
        for name, values in (
            ("raw tok/s", raw),
            ("httpx tok/s", served_httpx),
            ("openai tok/s", served_openai),
            ("router ms", router_ms),
            ("direct ms", direct_ms),
            ("cache hit ms", hit_ms),
        ):
            console.print(f"{name:>13}: " + " ".join(f"{v:.1f}" for v in values))
    raw_tps = median(raw)
    rows = [Row("tokens/s: raw llama.cpp", f"{raw_tps:.1f} tok/s", spread(raw), "-", "1.00x", "-", None)]
    for name, rates in (("Serve + httpx", served_httpx), ("Serve + openai", served_openai)):
        tps = median(rates)
        ratio = tps / raw_tps
        rows.append(
            Row(
                f"tokens/s: {name}",
                f"{tps:.1f} tok/s",
                spread(rates),
                f"{raw_tps:.1f} tok/s",
                f"{ratio:.3f}x",
                f">= {TOKENS_TARGET:.1f}x",
                ratio >= TOKENS_TARGET,
            )
        )
    router_med, direct_med = median(router_ms), median(direct_ms)
    overhead = router_med - direct_med
    rows.append(
        Row(
            "router overhead (max_tokens=1)",
            f"{router_med:.2f} ms",
            spread(router_ms),
            f"{direct_med:.2f} ms (openai)",
            f"+{overhead:.2f} ms" if overhead >= 0 else f"{overhead:.2f} ms",
            f"< {OVERHEAD_TARGET_MS:.0f} ms",
            overhead < OVERHEAD_TARGET_MS,
        )
    )
    hit = median(hit_ms)
    rows.append(
        Row(
            "cache hit via Router.complete",
            f"{hit:.2f} ms",
            spread(hit_ms),
            f"{direct_med:.2f} ms (model call)",
            f"{hit / direct_med:.3f}x",
            f"< {CACHE_HIT_TARGET_MS:.0f} ms",
            hit < CACHE_HIT_TARGET_MS,
        )
    )
    report(f"Local tier benchmark (medians of {runs} runs)", rows)
    console.print(
        f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}; other CPU work on the "
        "machine skews these numbers (see the min-max column)"
    )
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
