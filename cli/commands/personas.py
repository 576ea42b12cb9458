"""`chorus personas ...`: list, apply (create or update from YAML), delete, restore, stats,
schedule and engagement reports. `load_specs` and `apply_specs` also serve `chorus up`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.table import Table

from chorus.errors import PersonaSpecError
from chorus.models import Engagement, EngagementReport, PersonaStats, Schedule
from chorus.persona import PersonaSpec, load_persona_dir, load_persona_file
from cli.client import ApiClient, client_for
from cli.errors import CliError
from cli.render import NO_FIGURE, console, id_column, money
from serve.api.protocol import PersonaList


async def cmd_personas_list(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        personas = (await client.get(PersonaList, "/v1/personas")).personas
    table = Table(title=f"{len(personas)} personas")
    id_column(table, "id", [spec.id for spec in personas])
    for column in ("name", "platforms", "hook/body/rewrite", "budget/day"):
        table.add_column(column, overflow="fold")
    for spec in personas:
        policy = spec.model_policy
        table.add_row(
            spec.id,
            spec.display_name,
            ", ".join(p.name.value for p in spec.platforms),
            f"{policy.hook}/{policy.body}/{policy.rewrite}",
            "default" if spec.daily_budget_usd is None else money(spec.daily_budget_usd),
        )
    console.print(table)
    return 0


def load_specs(paths: Sequence[str]) -> list[PersonaSpec]:
    """Persona files (or folders of them), validated here first so errors name the file."""
    specs: list[PersonaSpec] = []
    try:
        for path in map(Path, paths):
            specs.extend(load_persona_dir(path) if path.is_dir() else [load_persona_file(path)])
    except PersonaSpecError as exc:
        raise CliError(str(exc)) from None
    return specs


Applied = tuple[str, str]  # (persona id, "created" | "updated" | "unchanged")


async def apply_specs(client: ApiClient, specs: Sequence[PersonaSpec]) -> list[Applied]:
    """PUT the specs that differ from the stored ones; one listing finds those that do not."""
    stored = {spec.id: spec for spec in (await client.get(PersonaList, "/v1/personas")).personas}

    async def put(spec: PersonaSpec) -> Applied:
        if stored.get(spec.id) == spec:
            return spec.id, "unchanged"
        response = await client.call("PUT", f"/v1/personas/{spec.id}", json=spec.model_dump(mode="json"))
        return spec.id, "created" if response.status_code == 201 else "updated"

    return list(await asyncio.gather(*(put(spec) for spec in specs)))


async def cmd_personas_apply(args: argparse.Namespace) -> int:
    specs = load_specs(args.files)
    async with client_for(args) as client:
        for persona_id, outcome in await apply_specs(client, specs):
            console.print(f"{outcome} {persona_id}")
    return 0


async def cmd_personas_delete(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        await client.call("DELETE", f"/v1/personas/{args.id}")
    console.print(f"deleted {args.id} (restorable for a while: chorus personas restore {args.id})")
    return 0


async def cmd_personas_restore(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        await client.call("POST", f"/v1/personas/{args.id}:restore")
    console.print(f"restored {args.id}")
    return 0


async def cmd_personas_stats(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        stats = await client.get(PersonaStats, f"/v1/personas/{args.id}/stats")
    table = Table(title=f"{args.id}", show_header=False)
    rate = NO_FIGURE if stats.engagement_rate is None else f"{stats.engagement_rate:.2%}"
    for name, value in (
        ("posts (accepted / rejected)", f"{stats.posts} ({stats.accepted} / {stats.rejected})"),
        ("tokens in / out", f"{stats.prompt_tokens} / {stats.completion_tokens}"),
        ("cost to date", money(stats.cost_usd)),
        ("cost per accepted post", money(stats.cost_per_accepted_post_usd)),
        ("spend today / budget", f"{money(stats.spend_today_usd)} / {money(stats.daily_budget_usd)}"),
        ("followers", NO_FIGURE if stats.followers is None else str(stats.followers)),
        ("engagement rate", rate),
        ("cost per follower", money(stats.cost_per_follower_usd)),
    ):
        table.add_row(name, value)
    console.print(table)
    return 0


async def cmd_personas_schedule(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        schedule = await client.get(Schedule, f"/v1/personas/{args.id}/schedule")
    tz = ZoneInfo(schedule.timezone)
    mode = "autopost on" if schedule.autopost else "autopost off: posts only on request"
    table = Table(title=f"{args.id} on {schedule.day} ({schedule.timezone}, {mode})")
    for column in ("slot", "local time", "job"):
        table.add_column(column)
    for number, slot in enumerate(schedule.slots, start=1):
        table.add_row(str(number), slot.at.astimezone(tz).strftime("%H:%M"), slot.job_id or "-")
    console.print(table)
    return 0


async def cmd_personas_engagement(args: argparse.Namespace) -> int:
    report = EngagementReport(
        platform=args.platform,
        followers=args.followers,
        impressions=args.impressions,
        engagements=args.engagements,
    )
    async with client_for(args) as client:
        response = await client.call(
            "POST", f"/v1/personas/{args.id}/engagement", json=report.model_dump(mode="json")
        )
    recorded = Engagement.model_validate_json(response.content)
    rate = "-" if recorded.engagement_rate is None else f"{recorded.engagement_rate:.2%}"
    console.print(
        f"recorded {recorded.platform.value} for {args.id}: {recorded.followers} followers, "
        f"engagement rate {rate}"
    )
    return 0
