"""`chorus keys ...` (admin): create a key (shown once), list, revoke, purge revoked records."""

from __future__ import annotations

import argparse

from rich.table import Table

from cli.client import client_for
from cli.render import console, id_column, utc_time
from serve.api.protocol import KeyCreated, KeyList, KeysPurged


async def cmd_keys_create(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        response = await client.call("POST", "/v1/keys", json={"role": args.role, "name": args.name})
    created = KeyCreated.model_validate_json(response.content)
    console.print(f"created {created.role} key {created.id}; it is shown once, store it now:")
    console.print(created.key, soft_wrap=True)
    return 0


async def cmd_keys_list(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        keys = (await client.get(KeyList, "/v1/keys", include_revoked=args.all or None)).keys
    table = Table(title=f"{len(keys)} {'API keys' if args.all else 'live API keys (--all: revoked too)'}")
    id_column(table, "id", [key.id for key in keys])
    for column in ("role", "name", "created (UTC)", *(("revoked (UTC)",) if args.all else ())):
        table.add_column(column, overflow="fold")
    for key in keys:
        revoked = (utc_time(key.revoked_at) if key.revoked_at else "",) if args.all else ()
        table.add_row(key.id, key.role, key.name, utc_time(key.created_at), *revoked)
    console.print(table)
    return 0


async def cmd_keys_purge(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        response = await client.call("POST", "/v1/keys:purge")
    purged = KeysPurged.model_validate_json(response.content).purged
    console.print(f"purged {len(purged)} revoked key(s)")
    return 0


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        await client.call("DELETE", f"/v1/keys/{args.id}")
    console.print(f"revoked {args.id}")
    return 0
