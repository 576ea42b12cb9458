"""Benchmark the HTTP API's control routes and its event streams.

Run from the repository root (needs `wrk` and `redis-server`)::

    python bench/api.py [--duration 8] [--sse 1000] [--hold 20]

One run, everything against the same Redis, seeded with one persona and a few hundred posts:

1. throughput and p50/p99 latency of ``GET /v1/personas/{id}`` and ``GET /v1/posts`` at 1, 50 and
   200 concurrent clients, measured by `wrk` (a load generator that is not the thing measured),
   against three servers of the very same FastAPI app (`serve.api.app.create_app`):
   bare uvicorn (baseline), Ray Serve through its HTTP proxy, and Serve's direct ingress (the
   replica's own port, RAY_SERVE_ENABLE_DIRECT_INGRESS=1; the proxy keeps working alongside).
   Targets at 50 clients: >= 0.3x bare throughput and p99 < 100 ms.
2. ``--sse`` event streams of one job held open through the Serve proxy for ``--hold`` seconds
   (past a keep-alive), then the job's events are written and every stream must deliver all of
   them and close. Target: 0 errors at 1,000 streams.

Everything this script starts (redis-server, Ray, Serve, uvicorn) is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/...`

from bench.harness import free_port, throwaway_redis
from chorus.models import Post
from chorus.persona import load_persona_file
from chorus.settings import Settings, load_settings
from chorus.store.api_keys import KeyStore
from chorus.store.client import async_redis
from chorus.store.jobs import JobRepo
from chorus.store.keys import keys_for
from chorus.store.personas import PersonaRepo
from chorus.store.posts import PostRepo
from ops.deploy import api_url, connect_ray, deploy_api, start_serve, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
PERSONA = ROOT / "personas" / "ember-and-oak-coffee.yaml"
CONCURRENCY = (1, 50, 200)
THROUGHPUT_TARGET = 0.3
P99_TARGET_MS = 100.0
SEED_POSTS = 300

console = Console(width=120)


async def seed(settings: Settings) -> tuple[str, str, str]:
    """A persona, posts to page through, a viewer key and a job to stream; returns them."""
    client = async_redis(settings)
    keys = keys_for(settings)
    spec = load_persona_file(PERSONA)
    await PersonaRepo(client, keys).put(spec)
    posts = PostRepo(client, keys)
    now = time.time()
    for i in range(SEED_POSTS):
        await posts.save(
            Post(
                id=f"job_seed_{i:05d}",
                persona_id=spec.id,
                platform="x",
                status="accepted" if i % 4 else "rejected",
                text=f"Roast day {i}: Ethiopia Guji, blueberry and jasmine. #EmberAndOak",
                topic="roast day",
                cost_usd=0.0004,
                prompt_tokens=250,
                completion_tokens=40,
                tiers={"hook": "premium", "body": "local"},
                nodes=[],
                created_at=now - SEED_POSTS + i,
            )
        )
    _, key = await KeyStore(client, keys).create("viewer", "bench")
    job = await JobRepo(client, keys).create(spec.id)
    # This benchmark writes the job's events itself: off the pending set, or the fleet's directory
    # (which the API starts) would resume the job and end every stream before the hold is over.
    await client.zrem(keys("jobs", "pending"), job.id)
    await client.aclose()
    return spec.id, key, job.id


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match.group(2)]


def _find(pattern: str, out: str) -> str:
    match = re.search(pattern, out)
    if match is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{out}")
    return match.group(1)


def wrk(url: str, key: str, clients: int, duration_s: int) -> WrkResult:
    out = subprocess.run(
        [
            *("wrk", f"-t{min(2, clients)}", f"-c{clients}", f"-d{duration_s}s", "--latency"),
            *("--timeout", "10s", "-H", f"Authorization: Bearer {key}", url),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkResult(
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(_find(r"(?m)^\s+50%\s+(\S+)", out)),
        p99_ms=_ms(_find(r"(?m)^\s+99%\s+(\S+)", out)),
        errors=errors,
    )


@contextmanager
def bare_uvicorn(settings: Settings) -> Iterator[str]:
    """The same app on plain uvicorn in its own process (one worker, like one Serve replica)."""
    port = free_port()
    env = {**os.environ, "CHORUS_REDIS__URL": settings.redis.url, "CHORUS_REDIS__KEY_PREFIX": "bench"}
    proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)], env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def serve_bare(port: int) -> None:
    import uvicorn

    from serve.api.app import create_app

    uvicorn.run(
        create_app(load_settings()), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def direct_ingress_url() -> str | None:
    """The API replica's own HTTP port, from Serve's target groups."""
    from ray import serve

    # Private client call: the public route to the same data (the dashboard's REST API) needs
    # the cluster's auth token.
    details = serve.context._get_global_client().get_serve_details()
    for group in details.get("target_groups", []):
        if group.get("app_name") == "chorus-api" and group.get("protocol") == "HTTP" and group["targets"]:
            # The replica binds Serve's HTTP host (loopback here) and advertises the node's IP.
            return f"http://127.0.0.1:{group['targets'][0]['port']}"
    return None


# --- event streams -------------------------------------------------------------------------------


@dataclass
class StreamResult:
    ok: bool
    error: str = ""
    done_at: float = 0.0


async def hold_stream(
    host: str, port: int, path: str, key: str, connected: asyncio.Event, counter: list[int], total: int
) -> StreamResult:
    """One raw HTTP/1.1 event-stream client: cheap enough for a thousand in one process."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        counter[0] += 1
        if counter[0] == total:
            connected.set()
        return StreamResult(False, f"connect: {exc}")
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    buffer = b""
    result = StreamResult(False, "closed before the end")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        counter[0] += 1
        if counter[0] == total:
            connected.set()
        if not head.startswith(b"HTTP/1.1 200"):
            return StreamResult(False, head.split(b"\r\n")[0].decode())
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buffer += chunk
            if b"event: end" in buffer:
                nodes = buffer.count(b"event: node")
                ok = nodes == 3 and b"event: post" in buffer
                result = StreamResult(ok, "" if ok else f"{nodes} node events", time.perf_counter())
                break
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        result = StreamResult(False, f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()
    if not result.ok and result.error == "closed before the end":
        result.error += f" (received {buffer[-160:]!r})"
    return result


async def sse_run(
    settings: Settings, base: str, key: str, job_id: str, streams: int, hold_s: float
) -> dict[str, str]:
    host, port = base.removeprefix("http://").split(":")
    connected, counter = asyncio.Event(), [0]
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(
            hold_stream(host, int(port), f"/v1/jobs/{job_id}/events", key, connected, counter, streams)
        )
        for _ in range(streams)
    ]
    await asyncio.wait_for(connected.wait(), 120)
    opened_s = time.perf_counter() - started
    await asyncio.sleep(hold_s)
    alive = sum(not t.done() for t in tasks)
    client = async_redis(settings)
    jobs = JobRepo(client, keys_for(settings))
    for node in ("plan", "hook", "body"):
        await jobs.emit(job_id, "node", {"node": node, "duration_s": 0.01, "tier": "local"})
    await jobs.emit(job_id, "post", {"id": job_id})
    emitted = time.perf_counter()
    await jobs.emit(job_id, "end", {"status": "done"})
    results = await asyncio.gather(*tasks)
    await client.aclose()
    errors = [r.error for r in results if not r.ok]
    delays = sorted(r.done_at - emitted for r in results if r.ok)
    return {
        "streams": str(streams),
        "opened in": f"{opened_s:.1f}s",
        f"still open after {hold_s:.0f}s": str(alive),
        "errors": str(len(errors)) + (f" (first: {errors[0]})" if errors else ""),
        "fan-out p50": f"{statistics.median(delays) * 1000:.0f} ms" if delays else "-",
        "fan-out p99": f"{delays[int(len(delays) * 0.99) - 1] * 1000:.0f} ms" if delays else "-",
    }


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (0: skip)")
    parser.add_argument("--sse", type=int, default=1000, help="event streams to hold (0: skip)")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds to hold them open")
    parser.add_argument(
        "--throughput-optimized",
        action="store_true",
        help="also set RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (user code on the replica's loop, GC frozen, ...)",
    )
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install {tool} (Debian's package)")

    import ray
    from ray import serve

    with throwaway_redis() as url:
        settings = load_settings(
            redis={"url": url, "key_prefix": "bench"},
            serve={"port": free_port()},
            ray_address="local",  # a Ray of its own, never one already running on the machine
        )
        persona_id, key, job_id = asyncio.run(seed(settings))
        routes = {
            "GET /v1/personas/{id}": f"/v1/personas/{persona_id}",
            "GET /v1/posts": "/v1/posts?limit=20",
        }
        results: dict[tuple[str, str, int], WrkResult] = {}

        with bare_uvicorn(settings) as bare:
            for route, path in routes.items() if args.duration else ():
                wrk(bare + path, key, 50, 2)  # warm-up
                for clients in CONCURRENCY:
                    results[("bare uvicorn", route, clients)] = wrk(bare + path, key, clients, args.duration)

        # Set before Ray starts, so Serve's processes inherit it: the API replica then also serves
        # HTTP on its own port (30000 and up), next to the proxy.
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        if args.throughput_optimized:
            os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        connect_ray(settings)
        try:
            start_serve(settings)
            deploy_api(settings)
            targets = {"Serve proxy": api_url(settings)}
            direct = direct_ingress_url()
            if direct:
                wait_for_http(direct + "/healthz", timeout_s=30)
                targets["Serve direct ingress"] = direct
            for name, base in targets.items():
                for route, path in routes.items() if args.duration else ():
                    wrk(base + path, key, 50, 2)
                    for clients in CONCURRENCY:
                        results[(name, route, clients)] = wrk(base + path, key, clients, args.duration)
            if results:
                report(results, list(targets))
            if args.sse:
                stats = asyncio.run(sse_run(settings, api_url(settings), key, job_id, args.sse, args.hold))
                table = Table(title="event streams through the Serve proxy")
                table.add_column("measure")
                table.add_column("value", justify="right")
                for name, value in stats.items():
                    table.add_row(name, value)
                console.print(table)
        finally:
            serve.shutdown()
            ray.shutdown()


def report(results: dict[tuple[str, str, int], WrkResult], serve_targets: list[str]) -> None:
    table = Table(title="control routes (wrk, same app, same Redis)")
    for column in ("server", "route", "clients", "req/s", "vs bare", "p50", "p99", "errors"):
        table.add_column(column, justify="left" if column in ("server", "route") else "right")
    for (server, route, clients), r in results.items():
        bare = results[("bare uvicorn", route, clients)]
        table.add_row(
            server,
            route,
            str(clients),
            f"{r.rps:,.0f}",
            f"{r.rps / bare.rps:.2f}x",
            f"{r.p50_ms:.1f} ms",
            f"{r.p99_ms:.1f} ms",
            str(r.errors),
        )
    console.print(table)
    for server in serve_targets:
        for route in {route for _, route, _ in results}:
            r, bare = results[(server, route, 50)], results[("bare uvicorn", route, 50)]
            ok = r.rps >= THROUGHPUT_TARGET * bare.rps and r.p99_ms < P99_TARGET_MS
            console.print(
                f"{'PASS' if ok else 'MISS'} {server}, {route} at 50 clients: {r.rps / bare.rps:.2f}x bare "
                f"(target >= {THROUGHPUT_TARGET}x), p99 {r.p99_ms:.0f} ms (target < {P99_TARGET_MS:.0f} ms)"
            )


if __name__ == "__main__":
    main()
