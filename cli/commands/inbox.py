"""`chorus inbox`, `chorus approve|reject|request-changes ID`, and a post's lifecycle:
`chorus posts history|retry|unpublish ID`. The API records the key's id as who acted."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from chorus.models import Post, PostHistory
from cli.client import client_for
from cli.errors import CliError
from cli.render import console, post_block, utc_time
from serve.api.protocol import InboxResponse


def _when(text: str | None) -> str | None:
    """An ISO 8601 time (a zone-less one is UTC) or Unix seconds, as the API reads it."""
    if text is None:
        return None
    try:
        return datetime.fromtimestamp(float(text), UTC).isoformat()
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at {text!r}: give an ISO 8601 time (2026-12-03T15:00) or Unix seconds") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _lifecycle_line(post: Post) -> str:
    parts = [f"{post.id}: {post.state}"]
    if post.publish_at and post.state in ("scheduled", "approved"):
        parts.append(f"due {utc_time(post.publish_at)} UTC")
    if post.published is not None:
        parts.append(post.published.platform_id)
    if post.last_error:
        parts.append(f"last error: {post.last_error}")
    return "  ".join(parts)


async def cmd_inbox(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        inbox = await client.get(
            InboxResponse,
            "/v1/inbox",
            persona=args.persona,
            platform=args.platform,
            older_than_s=args.older_than,
            limit=args.limit,
        )
    console.print(f"{len(inbox.posts)} posts waiting for approval", style="bold")
    for post in inbox.posts:
        console.print(post_block(post))
        if post.reasons:
            console.print("    problems: " + "; ".join(post.reasons), style="yellow")
        if post.feedback and post.revision > 1:
            console.print(f"    revision {post.revision}, after: {post.feedback}", style="dim")
    return 0


async def _act(args: argparse.Namespace, action: str, body: dict[str, Any] | None) -> Post:
    async with client_for(args) as client:
        response = await client.call("POST", f"/v1/posts/{args.id}:{action}", json=body)
    return Post.model_validate_json(response.content)


async def cmd_approve(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.text is not None:
        body["text"] = args.text
    if args.at is not None:
        body["publish_at"] = _when(args.at)
    post = await _act(args, "approve", body or None)
    console.print(f"approved {_lifecycle_line(post)}")
    return 0


async def cmd_reject(args: argparse.Namespace) -> int:
    post = await _act(args, "reject", {"reason": args.reason})
    console.print(f"rejected {_lifecycle_line(post)}")
    return 0


async def cmd_request_changes(args: argparse.Namespace) -> int:
    post = await _act(args, "request-changes", {"feedback": args.feedback})
    console.print(f"sent back {_lifecycle_line(post)}; a new draft will come back to the inbox")
    return 0


async def cmd_posts_retry(args: argparse.Namespace) -> int:
    post = await _act(args, "retry", None)
    console.print(f"retrying {_lifecycle_line(post)}")
    return 0


async def cmd_posts_unpublish(args: argparse.Namespace) -> int:
    post = await _act(args, "unpublish", None)
    console.print(f"unpublished {_lifecycle_line(post)}")
    return 0


async def cmd_posts_history(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        history = await client.get(PostHistory, f"/v1/posts/{args.id}/history")
    console.print(f"{history.post_id}: {history.state}", style="bold")
    for move in history.transitions:
        start = move.from_state or "-"
        why = f"  {move.reason}" if move.reason else ""
        console.print(f"  {utc_time(move.at)} UTC  {start} -> {move.to_state}  by {move.actor}{why}")
    return 0
