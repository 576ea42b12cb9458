"""`chorus posts [...]`: list posts newest first, page by cursor; `chorus posts delete ID`."""

from __future__ import annotations

import argparse

from chorus.models import PostPage
from cli.client import client_for
from cli.render import console, post_block


async def cmd_posts(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        page = await client.get(
            PostPage,
            "/v1/posts",
            persona=args.persona,
            status=args.status,
            state=getattr(args, "state", None),
            limit=args.limit,
            cursor=args.cursor,
        )
    console.print(f"{len(page.posts)} posts", style="bold")
    for post in page.posts:
        console.print(post_block(post))
    if page.next_cursor:
        console.print(f"more: chorus posts --cursor '{page.next_cursor}'", style="dim")
    return 0


async def cmd_posts_delete(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        await client.call("DELETE", f"/v1/posts/{args.id}")
    console.print(f"deleted post {args.id}")
    return 0
