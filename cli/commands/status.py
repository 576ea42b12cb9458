"""`chorus status`: the API's readiness checks, what `chorus up` started here, and the fleet."""

from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from cli.client import client_for
from cli.errors import CliError
from cli.render import console
from serve.api.protocol import FleetStatus


async def cmd_status(args: argparse.Namespace) -> int:
    from ops.local_stack import describe

    async with client_for(args) as client:
        try:
            ready = (await client.call("GET", "/readyz")).json()
        except CliError:
            ready = None
        fleet = await client.get(FleetStatus, "/v1/status")
    table = Table(title=f"Chorus at {client.url}", show_header=False)
    table.add_row("API", f"{client.url} (docs: {client.url}/docs)")
    # One row per component: what the API checked, then what `chorus up` started of it here.
    rows: dict[str, str] = dict(ready["checks"]) if ready is not None else {}
    for name, state in describe().items():
        rows[name] = f"{rows[name]}; {state}" if name in rows else state
    if ready is None:
        table.add_row("ready", Text("no (see /readyz)", style="red"))
    for name, state in rows.items():
        table.add_row(name, state)
    table.add_row("personas", str(fleet.personas))
    table.add_row("jobs queued or running", str(fleet.queue_depth))
    table.add_row("active persona actors", str(len(fleet.directory.get("active", []))))
    console.print(table)
    return 0
