"""End to end: a small workload on the real fleet, a real Prometheus scraping Ray's export.

The session's Ray (tests/conftest.py) exports every Ray, Serve and Chorus metric from its node's
metrics agent; a Prometheus started here finds it through the session's own service discovery
file and scrapes it every 2 s. After a workload through the HTTP API that touches every metric
(personas, posts, a budget stop, an engagement report and an error; then a passivation, and router
calls in this process for a cache hit, a retry and a fallback), every panel of every dashboard
must return data without the per-process WorkerId label, except the documented ones below, and
the spend Prometheus sums for a persona must equal the costs stored with its posts.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from actors.fleet import Fleet
from chorus.llm.router import Router
from chorus.llm.types import ModelRequest
from chorus.models import TERMINAL_JOB_STATUSES, EngagementReport
from chorus.persona import PersonaSpec
from chorus.settings import Settings
from chorus.store.client import async_redis
from ops.prometheus import SD_FILE_NAME, ray_sd_file, start_local_prometheus, stop_local_prometheus
from tests.support.paths import REPO_ROOT
from tests.support.personas import make_persona, unique_id
from tests.support.processes import free_port
from tests.support.tiers import hook_only_budget

GRAFANA_DIR = REPO_ROOT / "cluster" / "grafana"
SCRAPE_S = 2.0
METRICS_WAIT_S = 120.0  # Ray's metrics agent exports every 10 s; a scrape every 2 s

# Panels that cannot have data on this machine or with this workload, and why.
NO_DATA_EXPECTED = {
    "GPU utilization": "GPU nodes only (the vLLM tier); the test machine has no GPU",
    "GPU memory used": "GPU nodes only (the vLLM tier); the test machine has no GPU",
}
# Issue 11 (open): the publishing panels are not yet proven here, because this workload publishes
# nothing (it has no platform account). Proving them needs a publish to the local AT Protocol
# network and a rate-limited, retried one against the X fake; until then they are named, not hidden.
NOT_YET_EXERCISED = {
    "Posts published per hour by platform",
    "Publish outcomes per hour",
    "Posts by lifecycle state",
    "Reviewer decisions per hour",
    "Publish call latency p50 / p95 by platform",
    "Due time to published, p95",
    "Outbox depth and oldest due item",
    "Publish retries per hour by reason",
    "Rate-limit waits, p95",
    "Accounts needing re-auth",
}
# Only when the workload happened to produce no accepted post (review may reject the drafts).
NEEDS_AN_ACCEPTED_POST = {"Cost per accepted post", "Cost per accepted post (1h)"}
# Grafana's variables; windows wide enough to cover the whole workload.
VARIABLES = {"$__rate_interval": "10m", "$__interval": "10m", "$__range": "1h"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed"),
]


def _session_sd_file(tmp: Path) -> Path:
    """Ray's discovery file for this session; one written here from ray.nodes() if Ray wrote none
    (a Ray started without its dashboard)."""
    sd = ray_sd_file()
    assert sd.name == SD_FILE_NAME
    deadline = time.monotonic() + 15
    while not sd.is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
    if sd.is_file():
        return sd
    targets = [f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in ray.nodes() if n["Alive"]]
    own = tmp / SD_FILE_NAME
    own.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]), encoding="utf-8")
    return own


@dataclass(frozen=True)
class Prom:
    url: str

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body: dict[str, Any] = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body

    def value(self, expr: str) -> float | None:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(local_tier: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    data_dir = tmp_path_factory.mktemp("prometheus-ray")
    port = free_port()
    proc = start_local_prometheus(
        port, data_dir, sd_file=_session_sd_file(data_dir), scrape_interval_s=SCRAPE_S
    )
    assert proc is not None
    prom = Prom(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while not prom.query('up{job="ray"} == 1')["data"]["result"]:
            assert time.monotonic() < deadline, "Prometheus never scraped Ray's metrics endpoint"
            time.sleep(0.5)
        yield prom
    finally:
        stop_local_prometheus(proc)


@dataclass(frozen=True)
class Workload:
    persona: str
    post_costs: list[float]
    accepted: int
    engagement: EngagementReport


async def _router_calls(settings: Settings, persona: str) -> None:
    """In this process: a cache miss then a hit, and a premium call that retries then falls back."""
    client = async_redis(settings)
    messages = [{"role": "user", "content": f"Say hello to {persona}."}]
    router = Router(settings, client)
    try:
        # The same request twice: the second is answered from the cache.
        request = ModelRequest(
            step="hook", tier="local", messages=messages, max_tokens=4, seed=7, persona=persona
        )
        first = await router.complete(request)
        second = await router.complete(request)
        assert not first.cache_hit and second.cache_hit
    finally:
        await router.aclose()
    dead = settings.premium.model_copy(update={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    router = Router(settings.model_copy(update={"premium": dead}), client)
    try:
        fallback = await router.complete(
            ModelRequest(
                step="hook",
                tier="premium",
                messages=messages,
                max_tokens=4,
                use_cache=False,
                persona=persona,
            )
        )
        assert fallback.tier_used == "local" and fallback.fallback_reason
    finally:
        await router.aclose()
        await client.aclose()


@pytest.fixture(scope="module")
async def workload(
    prometheus: Prom, fleet_settings: Settings, api: str, admin_key: str
) -> AsyncIterator[Workload]:
    """The workload goes through the HTTP API, as a user's would (so Serve's HTTP metrics have it)."""
    fleet = Fleet(fleet_settings)
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:
        try:
            # A budget stop (job error), in an actor that is then passivated. Room for the hook
            # and not the body: a budget without room for the hook is refused before any job.
            probe = make_persona(
                unique_id("obs-broke"),
                model_policy={"hook": "local", "body": "local", "rewrite": "local"},
                rules={"no_cache_steps": ["hook", "body", "rewrite"]},
            )
            broke = probe.model_copy(update={"daily_budget_usd": hook_only_budget(fleet_settings, probe)})
            [job_id] = await _generate(client, broke)
            assert (await _finished(client, job_id, 120))["status"] == "budget_exceeded"
            directory = await fleet.directory()
            deadline = time.monotonic() + 30
            while broke.id not in await directory.passivate_idle.remote(0.0):  # once the actor is idle
                assert time.monotonic() < deadline, "the directory never passivated the idle actor"
                await asyncio.sleep(0.2)
            # Two posts, tiered: hook on premium, body and rewrites local; rules lenient enough
            # that review usually accepts.
            spec = make_persona(
                unique_id("obs"),
                # No cache: the spend check needs model calls that cost something, whatever
                # earlier tests left in the response cache for the same prompts.
                rules={
                    "max_hashtags": 30,
                    "novelty_threshold": 1.0,
                    "no_cache_steps": ["hook", "body", "rewrite"],
                },
                banned_words=[],
                banned_topics=[],
            )
            for job_id in await _generate(client, spec, count=2):
                job = await _finished(client, job_id, 300)
                assert job["status"] == "done", job["error"]
            posts = (await client.get("/v1/posts", params={"persona": spec.id})).json()["posts"]
            assert len(posts) == 2
            # What a platform reports of the account: 3% engagement, 1,200 followers.
            report = EngagementReport(
                platform=spec.platforms[0].name, followers=1_200, impressions=5_000, engagements=150
            )
            reported = await client.post(
                f"/v1/personas/{spec.id}/engagement", json=report.model_dump(mode="json")
            )
            assert reported.status_code == 201, reported.text
            assert (await client.get("/v1/personas/nobody-here")).status_code == 404  # an HTTP error
            await _router_calls(fleet_settings, unique_id("obs-router"))
            yield Workload(
                persona=spec.id,
                post_costs=[p["cost_usd"] for p in posts],
                accepted=sum(p["status"] == "accepted" for p in posts),
                engagement=report,
            )
        finally:
            await fleet.redis.aclose()


async def _generate(client: httpx.AsyncClient, spec: PersonaSpec, count: int = 1) -> list[str]:
    created = await client.post("/v1/personas", json=spec.model_dump(mode="json"))
    assert created.status_code == 201, created.text
    answer = await client.post(
        f"/v1/personas/{spec.id}/posts:generate", params={"async": "true"}, json={"count": count}
    )
    assert answer.status_code == 202, answer.text
    return [job["id"] for job in answer.json()["jobs"]]


async def _finished(client: httpx.AsyncClient, job_id: str, timeout_s: float) -> dict[str, Any]:
    """The job once terminal, polled as a client without an event stream would."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await client.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        if job["status"] in TERMINAL_JOB_STATUSES:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout_s:.0f}s"
        await asyncio.sleep(0.5)


def _panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(GRAFANA_DIR.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                if inner.get("targets"):
                    yield path.name, inner


def _substitute(expr: str, persona: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr.replace("$persona", persona)


def _empty_targets(prom: Prom, skip: set[str]) -> list[str]:
    """Targets that return no series, or only NaN, or keep the WorkerId label."""
    problems = []
    for board, panel in _panels():
        if panel["title"] in skip:
            continue
        for target in panel["targets"]:
            where = f"{board} / {panel['title']} / {target['refId']}"
            result = prom.query(_substitute(target["expr"], ".*"))["data"]["result"]
            values = [float(s["value"][1]) for s in result]
            if not any(math.isfinite(v) for v in values):
                problems.append(f"{where}: no data ({values})")
            problems += [f"{where}: keeps WorkerId" for s in result if "WorkerId" in s["metric"]]
    return problems


async def test_prometheus_sees_the_spend_stored_with_the_posts(prometheus: Prom, workload: Workload) -> None:
    expected = sum(workload.post_costs)
    assert expected > 0
    raw = f'sum(ray_chorus_llm_cost_usd_total{{persona="{workload.persona}"}})'
    posts = f'sum(ray_chorus_posts_total{{persona="{workload.persona}"}})'
    panel = next(p for _, p in _panels() if p["title"] == "Spend in range")
    in_range = _substitute(panel["targets"][0]["expr"], workload.persona)
    deadline = time.monotonic() + METRICS_WAIT_S
    while True:
        # The gateway records spend, the persona actor posts: their exports arrive independently.
        seen, counted = prometheus.value(raw), prometheus.value(posts)
        if seen is not None and math.isclose(seen, expected, rel_tol=1e-6) and counted == 2:
            break
        assert time.monotonic() < deadline, (
            f"Prometheus has spend {seen} and {counted} posts; the posts cost {expected}"
        )
        await asyncio.sleep(SCRAPE_S)
    # The dashboard's "Spend in range" counts every series from its first sample (no increase() gap).
    assert prometheus.value(in_range) == pytest.approx(expected, rel=1e-6)


async def test_prometheus_sees_the_reported_engagement_and_cost_per_follower(
    prometheus: Prom, workload: Workload
) -> None:
    persona, report = workload.persona, workload.engagement
    where = f'persona="{persona}", platform="{report.platform.value}"'
    expected = {
        f"max(ray_chorus_engagement_rate{{{where}}})": 150 / 5_000,
        f"max(ray_chorus_followers{{{where}}})": 1_200,
        # Spend to date over followers, from the very costs stored with the posts.
        f'max(ray_chorus_cost_per_follower_usd{{persona="{persona}"}})': sum(workload.post_costs) / 1_200,
    }
    deadline = time.monotonic() + METRICS_WAIT_S
    while True:
        seen = {query: prometheus.value(query) for query in expected}
        if all(v is not None and math.isclose(v, expected[q], rel_tol=1e-6) for q, v in seen.items()):
            break
        assert time.monotonic() < deadline, f"Prometheus has {seen}; expected {expected}"
        await asyncio.sleep(SCRAPE_S)


async def test_every_panel_returns_data(prometheus: Prom, workload: Workload) -> None:
    skip = set(NO_DATA_EXPECTED) | NOT_YET_EXERCISED
    if workload.accepted == 0:
        skip |= NEEDS_AN_ACCEPTED_POST
    deadline = time.monotonic() + METRICS_WAIT_S
    while problems := _empty_targets(prometheus, skip):
        if time.monotonic() > deadline:
            pytest.fail("\n".join(problems))
        await asyncio.sleep(SCRAPE_S)


async def test_the_documented_exceptions_really_have_no_data(prometheus: Prom, workload: Workload) -> None:
    titles = {p["title"] for _, p in _panels()}
    assert set(NO_DATA_EXPECTED) <= titles, "an exception names a panel that no longer exists"
    for _, panel in _panels():
        if panel["title"] in NO_DATA_EXPECTED:
            for target in panel["targets"]:
                result = prometheus.query(_substitute(target["expr"], ".*"))["data"]["result"]
                assert not result, f"{panel['title']} has data now: drop it from NO_DATA_EXPECTED"
