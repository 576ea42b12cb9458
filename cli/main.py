"""The `chorus` command: the argument parser, and dispatch to the handlers in `cli.commands`.

One place lists every command, its arguments and its help, in the order `chorus --help` shows
them; the handlers live with their group. `main` turns a CliError (and any other failure) into
one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from chorus.models import ROLES
from chorus.persona import Platform
from cli.commands.demo import cmd_demo
from cli.commands.devnet import cmd_devnet_down, cmd_devnet_status, cmd_devnet_up
from cli.commands.generate import cmd_generate
from cli.commands.keys import cmd_keys_create, cmd_keys_list, cmd_keys_purge, cmd_keys_revoke
from cli.commands.personas import (
    cmd_personas_apply,
    cmd_personas_delete,
    cmd_personas_engagement,
    cmd_personas_list,
    cmd_personas_restore,
    cmd_personas_schedule,
    cmd_personas_stats,
)
from cli.commands.posts import cmd_posts, cmd_posts_delete
from cli.commands.status import cmd_status
from cli.commands.up import DEFAULT_PERSONAS_DIR, cmd_down, cmd_up
from cli.errors import CliError
from cli.render import errors


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


_positive = _at_least(1)
_count = _at_least(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description="A fleet of AI social-media personas.")
    parser.add_argument("--api-url", help="the API's base URL (default: CHORUS_API_URL, saved, settings)")
    parser.add_argument("--key", help="API key (default: CHORUS_API_KEY, then the saved one)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], Any], help: str, parent: Any = commands
    ) -> Any:
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    for name, handler, text in (
        ("up", cmd_up, "start Redis, Ray and the Serve apps if needed, load personas/"),
        ("demo", cmd_demo, "`up`, then generate posts for every persona in parallel and report"),
    ):
        sub = add(name, handler, text)
        sub.add_argument("--personas", default=str(DEFAULT_PERSONAS_DIR), help="folder of persona files")
        sub.add_argument("--redeploy", action="store_true", help="redeploy the Serve apps even if running")
        sub.add_argument(
            "--with-prometheus", action="store_true", help="also start a local Prometheus scraping Ray"
        )
        sub.add_argument(
            "--prometheus-port", type=_positive, default=9090, help="its loopback port (default 9090)"
        )
        if name == "demo":
            sub.add_argument("--count", type=_positive, default=1, help="posts per persona (default 1)")
    add("down", cmd_down, "stop what `chorus up` started")
    add("status", cmd_status, "health of the API, its dependencies and the fleet")

    devnet = commands.add_parser(
        "devnet", help="a local AT Protocol network (PDS, AppView, PLC) for demos: up, status, down"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    devnet_up = add("up", cmd_devnet_up, "start it in the background and create test accounts", devnet)
    devnet_up.add_argument("--accounts", type=_count, default=2, help="test accounts to create (default 2)")
    devnet_up.add_argument("--rate-limits", action="store_true", help="the PDS's production rate limits on")
    devnet_up.add_argument(
        "--fixed-ports",
        action="store_true",
        help="PLC 2582, PDS 2583, AppView 2584, Ozone 2587 (default: free ports)",
    )
    devnet_up.add_argument(
        "--timeout", type=_positive, default=120, help="seconds to wait for it (default 120)"
    )
    add("status", cmd_devnet_status, "whether it is up, and its URLs", devnet)
    add("down", cmd_devnet_down, "stop it and everything it started", devnet)

    personas = commands.add_parser("personas", help="list, apply or delete personas").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add("list", cmd_personas_list, "list personas", personas)
    add(
        "apply", cmd_personas_apply, "create or update personas from YAML files or folders", personas
    ).add_argument("files", nargs="+", metavar="FILE")
    add(
        "delete",
        cmd_personas_delete,
        "delete a persona (restorable for fleet.deleted_retention_days)",
        personas,
    ).add_argument("id")
    add(
        "restore", cmd_personas_restore, "bring back a deleted persona with its engagement history", personas
    ).add_argument("id")
    add(
        "stats", cmd_personas_stats, "posts, spend, cost per post and audience of a persona", personas
    ).add_argument("id")
    add(
        "schedule", cmd_personas_schedule, "today's cadence slots and the jobs queued for them", personas
    ).add_argument("id")
    engagement = add(
        "engagement",
        cmd_personas_engagement,
        "record what a platform reports of a persona's account (the latest report counts)",
        personas,
    )
    engagement.add_argument("id")
    engagement.add_argument("--platform", required=True, choices=[p.value for p in Platform])
    engagement.add_argument("--followers", required=True, type=_count, help="followers now")
    engagement.add_argument(
        "--impressions", required=True, type=_count, help="views of its posts in the period"
    )
    engagement.add_argument(
        "--engagements", required=True, type=_count, help="likes, reposts, replies, clicks in the period"
    )

    generate = add("generate", cmd_generate, "generate posts for a persona, with live per-node progress")
    generate.add_argument("id")
    generate.add_argument("--count", type=_positive, default=1)

    posts = add("posts", cmd_posts, "list posts, newest first (or `posts delete ID`)")
    posts.add_argument("--persona")
    posts.add_argument("--status", choices=("accepted", "rejected"))
    posts.add_argument("--limit", type=_positive, default=20)
    posts.add_argument("--cursor")
    post_actions = posts.add_subparsers(dest="action", required=False, metavar="ACTION")
    add("delete", cmd_posts_delete, "delete a post (editor)", post_actions).add_argument("id")

    keys = commands.add_parser("keys", help="create, list, revoke or purge API keys (admin)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = add("create", cmd_keys_create, "create a key (printed once)", keys)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", default="")
    add("list", cmd_keys_list, "list live keys", keys).add_argument(
        "--all", action="store_true", help="revoked keys too, until purged"
    )
    add("revoke", cmd_keys_revoke, "revoke a key (not the last admin key)", keys).add_argument("id")
    add("purge", cmd_keys_purge, "delete the records of revoked keys", keys)
    return parser


def _fail(message: str) -> NoReturn:
    errors.print(f"error: {message}", soft_wrap=True)
    raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        outcome = args.handler(args)
        code = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as exc:
        # Still one line; CHORUS_DEBUG=1 shows where it came from.
        if os.environ.get("CHORUS_DEBUG"):
            raise
        # Errors raised inside Ray carry the remote traceback in their text: its last line is
        # the error itself.
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        _fail(f"{type(exc).__name__}: {lines[-1] if lines else ''} (CHORUS_DEBUG=1 shows the traceback)")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
