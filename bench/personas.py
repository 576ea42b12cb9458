"""Persona actors: memory, cold activation, how many can be held, post latency, actor overhead.

    python bench/personas.py [--actors 150] [--posts 5]

Targets (2-core machine): USS per active persona actor <= 60 MB; cold activation p50 <= 1.5 s;
150 active personas held at once without error; one full post on the local tier p50 < 4 s; the
actor + LangGraph overhead against calling the same node functions directly <= 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
import redis.asyncio as aioredis
from langgraph.runtime import Runtime

from actors.fleet import Fleet
from actors.persona import PersonaActor
from bench.harness import (
    SERVICE_KEY,
    Row,
    console,
    free_port,
    median,
    percentile,
    ray_serve_tier,
    report,
    spread,
    throwaway_redis,
)
from chorus.llm.router import Router
from chorus.persona import PersonaSpec, load_persona_file
from chorus.settings import Settings, load_settings
from chorus.store.keys import keys_for
from chorus.store.posts import PostRepo
from graphs.content.nodes.body import body
from graphs.content.nodes.finalize import finalize
from graphs.content.nodes.hook import hook
from graphs.content.nodes.plan import plan
from graphs.content.nodes.review import review
from graphs.content.nodes.rewrite import rewrite
from graphs.content.state import PostState, WorkflowContext

EXAMPLE = Path(__file__).resolve().parents[1] / "personas" / "ember-and-oak-coffee.yaml"


def uss_mb(pid: int) -> float:
    """Unique set size: the memory that leaving would free (private pages only)."""
    total_kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total_kb += int(line.split()[1])
    return total_kb / 1024


def persona(persona_id: str) -> PersonaSpec:
    spec = load_persona_file(EXAMPLE)
    # Real model calls every time: the cache would make posts free and instant.
    rules = spec.rules.model_copy(update={"no_cache_steps": ["hook", "body", "rewrite"]})
    policy = spec.model_policy.model_copy(update={"hook": "local", "rewrite": "local"})
    return spec.model_copy(update={"id": persona_id, "rules": rules, "model_policy": policy})


def activate(settings: Settings, count: int, prefix: str) -> tuple[list[float], list[ray.actor.ActorHandle]]:
    """Start `count` persona actors one after another, timing each until it answers."""
    times, handles = [], []
    for i in range(count):
        started = time.perf_counter()
        handle = PersonaActor.options(name=f"bench:{prefix}:{i}").remote(f"{prefix}-{i}", settings)  # type: ignore[attr-defined]
        ray.get(handle.ping.remote())
        times.append(time.perf_counter() - started)
        handles.append(handle)
    return times, handles


def actor_pids(handles: list[ray.actor.ActorHandle]) -> list[int]:
    # __ray_call__ runs a function inside the actor's process: its own pid, no state API needed.
    return ray.get([h.__ray_call__.remote(lambda _self: os.getpid()) for h in handles])


async def posts_through_actors(settings: Settings, count: int) -> tuple[list[float], list[float]]:
    """Wall time of each post through the fleet, and the time spent inside its nodes."""
    fleet = Fleet(settings)
    spec = persona("bench-actor")
    await fleet.apply(spec)
    walls, inside = [], []
    # The first post also starts the directory, the gateway and the persona's actor: not counted.
    for _ in range(count + 1):
        started = time.perf_counter()
        [job_id] = await fleet.generate(spec.id, 1)
        job = await fleet.wait(job_id, timeout_s=300)
        walls.append(time.perf_counter() - started)
        post = await fleet.post(job_id)
        if job.status != "done" or post is None:
            raise SystemExit(f"bench post failed: {job.status} {job.error}")
        inside.append(sum(n.duration_s for n in post.nodes))
    await fleet.close()
    return walls[1:], inside[1:]


async def posts_direct(settings: Settings, count: int) -> list[float]:
    """The same node functions called one after another in this process: no actor, no graph."""
    client = aioredis.Redis.from_url(settings.redis.url)
    router = Router(settings, client)
    posts = PostRepo(client, keys_for(settings))
    spec = persona("bench-direct")
    walls = []
    for i in range(count):
        ctx = WorkflowContext(
            persona=spec, model=router, save_post=posts.save, recent=await posts.recent(spec.id)
        )
        runtime: Runtime[WorkflowContext] = Runtime(context=ctx)
        started = time.perf_counter()
        state: PostState = {"job_id": f"direct-{i}-{time.time_ns()}", "records": []}
        for node in (plan, hook, body, review):
            update = await node(state, runtime)
            state = _merge(state, update)
        while state.get("verdict") == "rewrite":
            state = _merge(state, await rewrite(state, runtime))
            state = _merge(state, await review(state, runtime))
        await finalize(state, runtime)
        walls.append(time.perf_counter() - started)
    await router.aclose()
    await client.aclose()
    return walls


def _merge(state: PostState, update: PostState) -> PostState:
    merged: dict[str, object] = {**state, **update}
    merged["records"] = [*state.get("records", []), *update.get("records", [])]
    return merged  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--actors", type=int, default=150, help="persona actors to hold at once")
    parser.add_argument("--cold", type=int, default=10, help="cold activations to time")
    parser.add_argument("--posts", type=int, default=5, help="posts per latency measurement")
    args = parser.parse_args(argv)

    rows: list[Row] = []
    with throwaway_redis() as redis_url:
        port = free_port()
        settings = load_settings(
            redis={"url": redis_url, "key_prefix": "bench"},
            serve={"port": port},
            local={"base_url": f"http://127.0.0.1:{port}/llm/v1", "api_key": SERVICE_KEY},
        )
        with ray_serve_tier(settings):
            console.print(f"cores: {ray.cluster_resources().get('CPU')}, redis: {redis_url}")
            direct = asyncio.run(posts_direct(settings, args.posts))
            walls, inside = asyncio.run(posts_through_actors(settings, args.posts))
            p50 = median(walls)
            rows.append(
                Row("one post, local tier (p50 s)", f"{p50:.2f}", spread(walls), "-", "-", "< 4 s", p50 < 4)
            )
            overhead = [w - i for w, i in zip(walls, inside, strict=True)]
            ratio = median(overhead) / median(inside)
            rows.append(
                Row(
                    "actor+graph overhead per post (ms)",
                    f"{median(overhead) * 1000:.0f}",
                    spread([o * 1000 for o in overhead]),
                    f"nodes {median(inside):.2f} s",
                    f"{ratio:+.1%}",
                    "<= 10%",
                    ratio <= 0.10,
                )
            )
            rows.append(
                Row(
                    "same nodes called directly (p50 s)",
                    f"{median(direct):.2f}",
                    spread(direct),
                    f"actor {p50:.2f} s",
                    f"{p50 / median(direct):.2f}x",
                    "info",
                    None,
                )
            )

            cold, cold_handles = activate(settings, args.cold, "cold")
            rows.append(
                Row(
                    "cold activation (p50 s)",
                    f"{median(cold):.2f}",
                    spread(cold),
                    f"p90 {percentile(cold, 90):.2f}",
                    "-",
                    "<= 1.5 s",
                    median(cold) <= 1.5,
                )
            )
            for handle in cold_handles:
                ray.kill(handle)

            started = time.perf_counter()
            held_ok = True
            try:
                _, handles = activate(settings, args.actors, "held")
                ray.get([h.ping.remote() for h in handles])
            except Exception as exc:  # reported as a miss, with the reason
                console.print(f"[red]holding {args.actors} actors failed: {exc}[/red]")
                held_ok, handles = False, []
            held_s = time.perf_counter() - started
            rows.append(
                Row(
                    f"{args.actors} active personas held",
                    "ok" if held_ok else "error",
                    f"{held_s:.0f} s to start",
                    "-",
                    "-",
                    "no error",
                    held_ok,
                )
            )
            if handles:
                mem = [uss_mb(pid) for pid in actor_pids(handles)]
                rows.append(
                    Row(
                        "USS per active persona actor (MB)",
                        f"{median(mem):.1f}",
                        spread(mem),
                        f"{len(mem)} actors",
                        f"{sum(mem) / 1024:.1f} GB total",
                        "<= 60 MB",
                        median(mem) <= 60,
                    )
                )
    report("Persona actors (2-core machine)", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
