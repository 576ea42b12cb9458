"""`chorus accounts list|add|test|reauth|remove` (admin): a persona's platform accounts.

Secrets are never taken from the command line (argv is visible to every user of the machine and
kept in shell history): they are read from an environment variable (`--secret-env NAME`), from
stdin (`--secret-stdin`), or asked for without echo.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from chorus.models import Account
from cli.client import client_for
from cli.errors import CliError
from cli.render import console
from serve.api.protocol import AccountList


def _secret(args: argparse.Namespace, what: str) -> str:
    if args.secret_env:
        value = os.environ.get(args.secret_env, "")
        if not value:
            raise CliError(f"--secret-env {args.secret_env}: that environment variable is empty or unset")
        return value
    if args.secret_stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise CliError("--secret-stdin: nothing was read from stdin")
        return value
    if not sys.stdin.isatty():
        raise CliError(f"give the {what} with --secret-env NAME or --secret-stdin (stdin is not a terminal)")
    value = getpass.getpass(f"{what}: ").strip()
    if not value:
        raise CliError(f"no {what} given")
    return value


def _credentials(args: argparse.Namespace) -> dict[str, Any]:
    what = "app password" if args.platform == "bluesky" else "access token"
    body: dict[str, Any] = {"secret": _secret(args, what)}
    if args.refresh_token_env:
        body["refresh_token"] = os.environ.get(args.refresh_token_env) or None
    if args.client_id:
        body["client_id"] = args.client_id
    return body


def _line(account: Account) -> str:
    status = account.status.value
    if account.status_message:
        status += f" ({account.status_message})"
    return (
        f"{account.persona_id}  {account.platform.value}  {account.handle}  {account.service_url}  {status}"
    )


async def cmd_accounts_list(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        accounts = await client.get(AccountList, "/v1/accounts", persona=args.persona)
    console.print(f"{len(accounts.accounts)} accounts", style="bold")
    for account in accounts.accounts:
        style = "yellow" if account.status.value == "needs_reauth" else None
        console.print(_line(account), style=style, soft_wrap=True)
    return 0


async def cmd_accounts_add(args: argparse.Namespace) -> int:
    body = {"platform": args.platform, "handle": args.handle, **_credentials(args)}
    if args.service_url:
        body["service_url"] = args.service_url
    async with client_for(args, timeout_s=60.0) as client:
        response = await client.call("POST", f"/v1/personas/{args.persona}/accounts", json=body)
    account = Account.model_validate_json(response.content)
    console.print(f"added (logged in as {account.identity}): {_line(account)}", soft_wrap=True)
    return 0


async def cmd_accounts_test(args: argparse.Namespace) -> int:
    async with client_for(args, timeout_s=60.0) as client:
        response = await client.call("POST", f"/v1/personas/{args.persona}/accounts/{args.platform}:test")
    account = Account.model_validate_json(response.content)
    console.print(_line(account), soft_wrap=True)
    return 0 if account.status.value == "active" else 1


async def cmd_accounts_reauth(args: argparse.Namespace) -> int:
    async with client_for(args, timeout_s=60.0) as client:
        response = await client.call(
            "PUT",
            f"/v1/personas/{args.persona}/accounts/{args.platform}/credentials",
            json=_credentials(args),
        )
    account = Account.model_validate_json(response.content)
    console.print(f"new credentials work; its waiting posts publish now: {_line(account)}", soft_wrap=True)
    return 0


async def cmd_accounts_remove(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        await client.call("DELETE", f"/v1/personas/{args.persona}/accounts/{args.platform}")
    console.print(f"removed {args.persona}'s {args.platform} account")
    return 0
