"""Batch campaigns: N posts for every persona in a folder, through the fleet's persona actors.

    python -m cluster.campaign --personas personas/ --posts-per-persona 3 --out report.json

Runs the same way on a laptop (a local Ray is started), as
`ray job submit --working-dir . -- python -m cluster.campaign ...` against a running head, and
as the entrypoint of the RayJob in cluster/rayjob-campaign.yaml. Settings come from CHORUS_*
variables, as everywhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import redis
from pydantic import BaseModel, Field

from actors.fleet import Fleet
from chorus.errors import PersonaSpecError, SettingsError
from chorus.models import Job, Post
from chorus.persona import PersonaSpec, load_persona_dir, load_persona_file
from chorus.settings import Settings, load_settings
from ops.deploy import connect_ray
from ops.service_key import with_service_key


class PersonaReport(BaseModel):
    persona_id: str
    jobs: list[str]
    posts: int
    accepted: int
    rejected: int
    budget_exceeded: int
    failed: int
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    # For each workflow step, how many calls each tier served: the campaign's tier mix.
    tier_mix: dict[str, dict[str, int]]
    node_latency_p50_s: dict[str, float]
    post_latency_p50_s: float | None


class CampaignReport(BaseModel):
    started_at: float
    finished_at: float
    wall_s: float
    posts_per_persona: int
    personas: list[PersonaReport]
    totals: dict[str, float] = Field(default_factory=dict)


def summarise(persona_id: str, jobs: list[Job], posts: list[Post]) -> PersonaReport:
    statuses = Counter(j.status for j in jobs)
    tiers: dict[str, Counter[str]] = {}
    latencies: dict[str, list[float]] = {}
    for post in posts:
        for node in post.nodes:
            latencies.setdefault(node.node, []).append(node.duration_s)
            if node.tier is not None:
                tiers.setdefault(node.node, Counter())[node.tier] += 1
    durations = [j.finished_at - j.started_at for j in jobs if j.finished_at and j.started_at]
    return PersonaReport(
        persona_id=persona_id,
        jobs=[j.id for j in jobs],
        posts=len(posts),
        accepted=sum(p.status == "accepted" for p in posts),
        rejected=sum(p.status == "rejected" for p in posts),
        budget_exceeded=statuses["budget_exceeded"],
        failed=statuses["failed"],
        cost_usd=sum(p.cost_usd for p in posts),
        prompt_tokens=sum(p.prompt_tokens for p in posts),
        completion_tokens=sum(p.completion_tokens for p in posts),
        tier_mix={node: dict(c) for node, c in tiers.items()},
        node_latency_p50_s={node: statistics.median(v) for node, v in latencies.items()},
        post_latency_p50_s=statistics.median(durations) if durations else None,
    )


async def run_campaign(
    settings: Settings, personas: list[PersonaSpec], posts_per_persona: int, timeout_s: float
) -> CampaignReport:
    started = time.time()
    fleet = Fleet(settings)
    try:
        for spec in personas:
            await fleet.apply(spec)
        job_ids = {spec.id: await fleet.generate(spec.id, posts_per_persona) for spec in personas}
        # Personas run in parallel (one actor each); one persona's posts run one after another.
        await asyncio.gather(*(fleet.wait(j, timeout_s) for ids in job_ids.values() for j in ids))
        reports = []
        for persona_id, ids in job_ids.items():
            jobs = [job for j in ids if (job := await fleet.job(j)) is not None]
            posts = [post for j in ids if (post := await fleet.post(j)) is not None]
            reports.append(summarise(persona_id, jobs, posts))
    finally:
        await fleet.close()
    finished = time.time()
    totals = {
        "posts": float(sum(r.posts for r in reports)),
        "accepted": float(sum(r.accepted for r in reports)),
        "rejected": float(sum(r.rejected for r in reports)),
        "cost_usd": sum(r.cost_usd for r in reports),
        "tokens": float(sum(r.prompt_tokens + r.completion_tokens for r in reports)),
    }
    return CampaignReport(
        started_at=started,
        finished_at=finished,
        wall_s=finished - started,
        posts_per_persona=posts_per_persona,
        personas=reports,
        totals=totals,
    )


def _load(paths: list[Path]) -> list[PersonaSpec]:
    specs: list[PersonaSpec] = []
    for path in paths:
        if path.is_dir():
            specs += load_persona_dir(path)
        elif path.is_file():
            specs.append(load_persona_file(path))
        else:
            raise PersonaSpecError(str(path), "", "no such file or folder")
    if not specs:
        raise PersonaSpecError(", ".join(map(str, paths)), "", "no persona files (*.yaml) found")
    return specs


def _check_services(settings: Settings) -> None:
    """Fail in one line, before any actor starts, when a service the campaign needs is down."""
    try:
        redis.Redis.from_url(settings.redis.url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"Redis at {settings.redis.url} is unreachable ({exc}); set CHORUS_REDIS__URL"
        ) from None
    models = settings.local.base_url.rstrip("/") + "/models"
    try:
        answer = httpx.get(models, timeout=5, headers=settings.local.auth_headers())
    except httpx.HTTPError as exc:
        raise RuntimeError(
            f"the local tier at {settings.local.base_url} is not answering ({exc}); start the fleet "
            "(`chorus up`) or set CHORUS_LOCAL__BASE_URL"
        ) from None
    if answer.status_code in (401, 403):
        raise RuntimeError(
            f"the local tier at {settings.local.base_url} refuses this process's service key; set "
            "CHORUS_LOCAL__API_KEY to the fleet's (`chorus up` keeps it in "
            "~/.local/share/chorus/local-tier-key)"
        )
    if answer.status_code != 200:
        raise RuntimeError(
            f"the local tier at {settings.local.base_url} answers HTTP {answer.status_code}; start the fleet "
            "(`chorus up`) or set CHORUS_LOCAL__BASE_URL"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--personas", type=Path, nargs="+", required=True, help="persona files or folders")
    parser.add_argument("--posts-per-persona", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("report.json"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the posts")
    args = parser.parse_args(argv)
    if args.posts_per_persona < 1:
        parser.error("--posts-per-persona must be at least 1")
    try:
        # The service key of a fleet `chorus up` started on this machine, unless one is configured.
        settings = with_service_key(load_settings(), create=False)
        personas = _load(args.personas)
        _check_services(settings)
        connect_ray(settings)
        report = asyncio.run(run_campaign(settings, personas, args.posts_per_persona, args.timeout))
    except (SettingsError, PersonaSpecError, RuntimeError, TimeoutError) as exc:
        print(f"campaign: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(report.model_dump_json(indent=2))
    totals = report.totals
    print(
        f"campaign: {len(report.personas)} personas, {totals['posts']:.0f} posts "
        f"({totals['accepted']:.0f} accepted, {totals['rejected']:.0f} rejected), "
        f"${totals['cost_usd']:.6f}, {report.wall_s:.1f}s; report in {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
