"""`chorus demo`: `chorus up`, then a post per persona in parallel, a live table, a report each.

The report reads per-node figures from the posts this run produced and the all-time figures
from the persona's stats, so a rerun shows both what it just spent and where the budget stands.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from chorus.models import NodeRecord, PersonaStats
from cli.client import ApiClient
from cli.commands.up import UpResult, bring_up, print_urls
from cli.errors import CliError
from cli.jobs import JobRun, follow, progress_printer, start_jobs
from cli.render import console, id_column, money, post_panel


def _progress_table(runs: Sequence[JobRun]) -> Table:
    table = Table(title="generating", expand=False)
    id_column(table, "persona", [run.persona_id for run in runs])
    id_column(table, "job", [run.job_id for run in runs])
    for column in ("nodes done", "last", "elapsed", "status"):
        table.add_column(column, overflow="fold")
    for run in runs:
        style = {"done": "green", "running": "cyan", "queued": "dim"}.get(run.status, "red")
        table.add_row(
            run.persona_id,
            run.job_id,
            " ".join(n.node for n in run.nodes),
            run.current,
            f"{(run.finished or time.monotonic()) - run.started:5.1f}s",
            Text(run.status, style=style),
        )
    return table


def _persona_report(persona_id: str, runs: Sequence[JobRun], stats: PersonaStats) -> Group:
    posts = [run.post for run in runs if run.post is not None]
    nodes: dict[tuple[str, str], list[NodeRecord]] = {}
    for post in posts:
        for node in post.nodes:
            nodes.setdefault((node.node, node.tier or "rules"), []).append(node)
    accepted = sum(post.status == "accepted" for post in posts)
    tokens = sum(post.prompt_tokens + post.completion_tokens for post in posts)
    cost = sum(post.cost_usd for post in posts)
    table = Table(
        title=f"{persona_id}",
        caption=(
            f"this run: {len(posts)} posts, {accepted} accepted / {len(posts) - accepted} rejected, "
            f"{tokens} tokens, {money(cost)} · all time: {stats.posts} posts, "
            f"spend today {money(stats.spend_today_usd)} of {money(stats.daily_budget_usd)}, "
            f"per accepted post {money(stats.cost_per_accepted_post_usd)}"
        ),
    )
    for column in ("node", "tier", "calls", "latency (mean)", "tokens in+out", "cost"):
        table.add_column(column, justify="left" if column in ("node", "tier") else "right")
    for (name, tier), records in nodes.items():
        table.add_row(
            name,
            tier,
            str(len(records)),
            f"{sum(r.duration_s for r in records) / len(records):.2f}s",
            f"{sum(r.prompt_tokens for r in records)}+{sum(r.completion_tokens for r in records)}",
            money(sum(r.cost_usd for r in records)),
        )
    failures = [f"{run.job_id}: {run.status} ({run.reason})" for run in runs if run.status != "done"]
    return Group(table, *(Text(line, style="red") for line in failures))


async def _demo_generate(result: UpResult, persona_ids: Sequence[str], count: int) -> list[JobRun]:
    async with ApiClient(result.url, result.key) as client:
        batches = await asyncio.gather(*(start_jobs(client, pid, count) for pid in persona_ids))
        runs = [run for batch in batches for run in batch]
        if console.is_terminal:
            from rich.live import Live

            # Redrawn on every refresh, not only on events, so the elapsed times keep moving.
            with Live(console=console, refresh_per_second=4, get_renderable=lambda: _progress_table(runs)):
                await asyncio.gather(*(follow(client, run, lambda _run, _event: None) for run in runs))
        else:
            printer = progress_printer(lambda r: f"{r.persona_id:<28} ")
            await asyncio.gather(*(follow(client, run, printer) for run in runs))
        for persona_id in persona_ids:
            stats = await client.get(PersonaStats, f"/v1/personas/{persona_id}/stats")
            console.print(_persona_report(persona_id, [r for r in runs if r.persona_id == persona_id], stats))
            for run in runs:
                if run.persona_id == persona_id and run.post is not None:
                    console.print(post_panel(run.post))
    return runs


def cmd_demo(args: argparse.Namespace) -> int:
    result = bring_up(args)
    if not result.personas:
        raise CliError(f"no personas in {args.personas}/ to run the demo with")
    console.print(f"generating {args.count} post(s) for each of {len(result.personas)} personas in parallel")
    started = time.monotonic()
    runs = asyncio.run(_demo_generate(result, result.personas, args.count))
    done = sum(run.status == "done" for run in runs)
    console.print(f"{done}/{len(runs)} jobs done in {time.monotonic() - started:.1f}s")
    print_urls(result)
    return 0 if done == len(runs) else 1
