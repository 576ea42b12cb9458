"""`chorus generate ID`: queue posts for a persona and print each node as its job finishes it."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from cli.client import client_for
from cli.errors import CliError
from cli.jobs import JobRun, follow, progress_printer, start_jobs
from cli.render import console, post_panel


async def cmd_generate(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        runs = await start_jobs(client, args.id, args.count, args.source_url, args.source_title)
        console.print(f"{args.id}: {len(runs)} job(s) queued: {', '.join(r.job_id for r in runs)}")
        prefix: Callable[[JobRun], str] = (lambda r: f"{r.job_id} ") if len(runs) > 1 else (lambda r: "  ")
        with console.status(f"generating {len(runs)} post(s) for {args.id}…"):
            await asyncio.gather(*(follow(client, run, progress_printer(prefix)) for run in runs))
    for run in runs:
        if run.post is not None:
            console.print(post_panel(run.post))
    failed = [run for run in runs if run.status != "done"]
    if failed:
        raise CliError(
            f"{len(failed)} of {len(runs)} job(s) did not finish: {failed[0].status} ({failed[0].reason})"
        )
    return 0
