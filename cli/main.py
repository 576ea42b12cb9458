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

from chorus.lifecycle import LIFECYCLE_STATES
from chorus.models import ROLES
from chorus.persona import Platform
from cli.commands.accounts import (
    cmd_accounts_add,
    cmd_accounts_list,
    cmd_accounts_reauth,
    cmd_accounts_remove,
    cmd_accounts_test,
)
from cli.commands.demo import cmd_demo
from cli.commands.devnet import cmd_devnet_down, cmd_devnet_status, cmd_devnet_up
from cli.commands.generate import cmd_generate
from cli.commands.inbox import (
    cmd_approve,
    cmd_inbox,
    cmd_posts_history,
    cmd_posts_retry,
    cmd_posts_unpublish,
    cmd_reject,
    cmd_request_changes,
)
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
    generate.add_argument("--source-url", help="a page the posts are about (a link card on Bluesky)")
    generate.add_argument("--source-title", help="the page's title for the link card")

    inbox = add("inbox", cmd_inbox, "posts waiting for approval, longest waiting first")
    inbox.add_argument("--persona")
    inbox.add_argument("--platform", choices=[p.value for p in Platform])
    inbox.add_argument("--older-than", type=float, help="only posts waiting at least this many seconds")
    inbox.add_argument("--limit", type=_positive, default=50)
    approve = add("approve", cmd_approve, "approve a waiting post (editor), optionally edited or timed")
    approve.add_argument("id")
    approve.add_argument("--text", help="edited text (reviewed against the persona's rules again)")
    approve.add_argument("--at", help="publish time: ISO 8601 (UTC unless it says) or Unix seconds")
    reject = add("reject", cmd_reject, "reject a post (editor)")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    changes = add("request-changes", cmd_request_changes, "send a post back with feedback for a new draft")
    changes.add_argument("id")
    changes.add_argument("--feedback", required=True)

    posts = add("posts", cmd_posts, "list posts, newest first (or `posts delete ID`)")
    posts.add_argument("--persona")
    posts.add_argument("--status", choices=("accepted", "rejected"))
    posts.add_argument("--state", choices=LIFECYCLE_STATES, help="only posts in this lifecycle state")
    posts.add_argument("--limit", type=_positive, default=20)
    posts.add_argument("--cursor")
    post_actions = posts.add_subparsers(dest="action", required=False, metavar="ACTION")
    add("delete", cmd_posts_delete, "delete a post (editor)", post_actions).add_argument("id")
    add(
        "history", cmd_posts_history, "every lifecycle move of a post: who, when, why", post_actions
    ).add_argument("id")
    add(
        "retry", cmd_posts_retry, "put a failed post back into the outbox (editor)", post_actions
    ).add_argument("id")
    add(
        "unpublish", cmd_posts_unpublish, "delete a published post from its platform (editor)", post_actions
    ).add_argument("id")

    accounts = commands.add_parser(
        "accounts", help="a persona's platform accounts (admin): list, add, test, reauth, remove"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    add("list", cmd_accounts_list, "every account and its status", accounts).add_argument("--persona")
    for action, account_handler, account_help in (
        ("add", cmd_accounts_add, "add an account (checked with a real login first)"),
        ("test", cmd_accounts_test, "log in now; exit 1 when it needs re-authentication"),
        ("reauth", cmd_accounts_reauth, "give an account new credentials; its waiting posts then publish"),
        ("remove", cmd_accounts_remove, "remove an account and its credentials"),
    ):
        sub = add(action, account_handler, account_help, accounts)
        sub.add_argument("persona")
        if action == "add":
            sub.add_argument("--platform", required=True, choices=("bluesky", "mastodon", "x"))
            sub.add_argument(
                "--handle", required=True, help="alice.bsky.social, alice@mastodon.social, alice"
            )
            sub.add_argument("--service-url", help="its server (Bluesky default https://bsky.social)")
        else:
            sub.add_argument("platform", choices=("bluesky", "mastodon", "x"))
        if action in ("add", "reauth"):
            sub.add_argument("--secret-env", metavar="NAME", help="read the app password / token from $NAME")
            sub.add_argument(
                "--secret-stdin", action="store_true", help="read it from the first line of stdin"
            )
            sub.add_argument(
                "--refresh-token-env", metavar="NAME", help="X: read the refresh token from $NAME"
            )
            sub.add_argument("--client-id", help="X: the OAuth 2 app's client id")

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
