"""What recording Chorus's metrics costs a post on the local tier: metrics on vs off, same run.

    python bench/metrics_overhead.py [--pairs 8] [--calls 20000]

The content workflow runs in this process (``actors.persona.PersonaWorker`` with an in-process
``Router``, so the router's and the workflow's metrics are both recorded here), on the llama.cpp
tier served by a local Ray Serve. Posts alternate metrics on / off (``CHORUS_METRICS_ENABLED``,
which ``chorus.metrics.enabled()`` reads on every call) so drift of the machine hits both alike.

Two measures, both against the post's wall time:

1. direct: median post time with metrics on vs off, every post the same work (one topic, greedy
   sampling, no cache, no rewrites). On 2 shared cores the spread of post times is still larger
   than the effect, so this bounds it rather than measures it;
2. estimated: metric calls per post (counted on a real post) x the cost of each kind of call
   (timed over ``--calls`` calls with the same tags) / median post time. Target < 2%.

The benchmark starts its own redis-server and a local Ray (never joins a running cluster) and
stops both. Exit status 0 when the estimated overhead meets the target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# A benchmark of its own: start a fresh local Ray rather than join one another command started.
os.environ.setdefault("RAY_ADDRESS", "local")

from actors.persona import PersonaWorker
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
from chorus import metrics
from chorus.llm.router import Router
from chorus.llm.types import LLMResult, ModelRequest, SpendGuard
from chorus.persona import PersonaSpec, load_persona_file
from chorus.settings import Settings, load_settings
from chorus.store.client import async_redis
from chorus.store.jobs import JobRepo
from chorus.store.keys import keys_for
from chorus.store.personas import PersonaRepo

EXAMPLE = Path(__file__).resolve().parents[1] / "personas" / "ember-and-oak-coffee.yaml"
TARGET = 0.02
ENV = "CHORUS_METRICS_ENABLED"
RECORDERS = ("inc", "observe", "set_gauge")


def persona(persona_id: str) -> PersonaSpec:
    spec = load_persona_file(EXAMPLE)
    # Real model calls on every post, all on the local tier. One topic and greedy sampling
    # (Greedy below) make every post the same work, so on and off compare like for like; no
    # rewrites (settings) and no cache (a hit would make a post free and instant) either.
    policy = spec.model_policy.model_copy(update={"hook": "local", "body": "local", "rewrite": "local"})
    return spec.model_copy(
        update={
            "id": persona_id,
            "model_policy": policy,
            "topics": spec.topics[:1],
            "daily_budget_usd": 1000.0,
        }
    )


class Greedy:
    """The router with temperature 0 and a fixed seed: the same prompt, the same tokens."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def complete(self, request: ModelRequest, guard: SpendGuard | None = None) -> LLMResult:
        return await self.router.complete(request.model_copy(update={"temperature": 0.0, "seed": 0}), guard)


@contextmanager
def metrics_enabled(on: bool) -> Iterator[None]:
    previous = os.environ.get(ENV)
    os.environ[ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


@contextmanager
def counting_calls() -> Iterator[Counter[str]]:
    """Counts `chorus.metrics` calls by kind (callers look the functions up on the module)."""
    counts: Counter[str] = Counter()
    originals = {name: getattr(metrics, name) for name in RECORDERS}

    def wrap(name: str, original: Callable[..., None]) -> Callable[..., None]:
        def counted(*args: Any, **kwargs: Any) -> None:
            counts[name] += 1
            original(*args, **kwargs)

        return counted

    for name, original in originals.items():
        setattr(metrics, name, wrap(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(metrics, name, original)


async def one_post(worker: PersonaWorker, jobs: JobRepo, persona_id: str) -> float:
    job = await jobs.create(persona_id)
    started = time.perf_counter()
    status = await worker.run_job(job.id)
    elapsed = time.perf_counter() - started
    if status != "done":
        raise SystemExit(f"job {job.id} ended {status}: {(await jobs.get(job.id))}")
    return elapsed


def call_cost_us(calls: int) -> dict[str, float]:
    """Microseconds per enabled call of each kind, with tags like the workflow's."""
    samples: dict[str, Callable[[], None]] = {
        "inc": lambda: metrics.inc(
            "chorus_llm_cost_usd_total", 1e-6, persona="bench", step="body", tier="local", model="m"
        ),
        "observe": lambda: metrics.observe("chorus_node_duration_seconds", 0.4, persona="bench", node="body"),
        "set_gauge": lambda: metrics.set_gauge("chorus_persona_spend_today_usd", 0.1, persona="bench"),
    }
    costs = {}
    with metrics_enabled(True):
        for name, call in samples.items():
            for _ in range(200):  # create the metric, warm the path
                call()
            started = time.perf_counter()
            for _ in range(calls):
                call()
            costs[name] = (time.perf_counter() - started) / calls * 1e6
    with metrics_enabled(False):
        started = time.perf_counter()
        for _ in range(calls):
            samples["inc"]()
        costs["disabled"] = (time.perf_counter() - started) / calls * 1e6
    return costs


async def measure(settings: Settings, pairs: int) -> tuple[list[float], list[float], Counter[str]]:
    client = async_redis(settings)
    keys = keys_for(settings)
    spec = persona("bench-metrics")
    await PersonaRepo(client, keys).put(spec)
    jobs = JobRepo(client, keys)
    router = Router(settings, client)
    worker = PersonaWorker(spec.id, settings, Greedy(router))
    try:
        with metrics_enabled(True), counting_calls() as counts:  # warm-up, and the calls per post
            await one_post(worker, jobs, spec.id)
            counts.clear()
            await one_post(worker, jobs, spec.id)
        with metrics_enabled(False):
            await one_post(worker, jobs, spec.id)
        on: list[float] = []
        off: list[float] = []
        for i in range(pairs):
            order = (True, False) if i % 2 == 0 else (False, True)  # ABBA: no side always goes first
            for enabled in order:
                with metrics_enabled(enabled):
                    (on if enabled else off).append(await one_post(worker, jobs, spec.id))
        return on, off, counts
    finally:
        await router.aclose()
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=8, help="posts with metrics on, and as many off")
    parser.add_argument("--calls", type=int, default=20000, help="calls per kind for the per-call cost")
    args = parser.parse_args(argv)

    with throwaway_redis() as redis_url:
        port = free_port()
        settings = load_settings(
            redis={"url": redis_url, "key_prefix": "bench"},
            serve={"port": port},
            local={"base_url": f"http://127.0.0.1:{port}/llm/v1", "api_key": SERVICE_KEY},
            premium={"api_key": None},
            cache={"enabled": False},
            fleet={"max_rewrites": 0},
        )
        with ray_serve_tier(settings):
            on, off, counts = asyncio.run(measure(settings, args.pairs))
            costs = call_cost_us(args.calls)

    post_s = median(on)
    per_post_us = sum(counts[name] * costs[name] for name in RECORDERS)
    estimated = per_post_us / 1e6 / post_s
    calls = sum(counts.values())
    console.print(
        f"posts: {len(on)} with metrics, {len(off)} without (alternating); "
        f"calls per post: {dict(counts)}; per-call cost: "
        + ", ".join(f"{k} {v:.1f} µs" for k, v in costs.items())
    )
    rows = [
        Row("post, metrics on (s)", f"{median(on):.2f}", spread(on), "-", "-", "info", None),
        Row(
            "post, metrics off (s)",
            f"{median(off):.2f}",
            spread(off),
            "-",
            f"on/off {median(on) / median(off):.3f}x median, {min(on) / min(off):.3f}x min",
            "info (noise)",
            None,
        ),
        Row(
            "metric calls per post",
            f"{calls}",
            " ".join(f"{k}={counts[k]}" for k in RECORDERS),
            "-",
            "-",
            "info",
            None,
        ),
        Row(
            "metrics cost per post (ms)",
            f"{per_post_us / 1000:.2f}",
            f"{costs['disabled']:.2f} µs/call off",
            f"post {post_s:.2f} s",
            f"{estimated:.3%}",
            f"< {TARGET:.0%}",
            estimated < TARGET,
        ),
    ]
    report("Metrics overhead on a local-tier post", rows)
    return 0 if estimated < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
