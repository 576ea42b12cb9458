"""How the CLI prints: the consoles, money and times, node lines, post panels, tables at 80 columns.

Printed with rich markup off: what is shown is data (ids, posts, server messages), and a `[...]`
in it (a regex such as `^[a-z0-9]`) must come out as it is, not as a style.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from chorus.models import NodeRecord, Post, usd

# markup=False: what is printed is data (ids, posts, server messages), never rich markup.
console = Console(highlight=False, markup=False)
errors = Console(stderr=True, highlight=False, markup=False)

# A figure that does not exist (no followers to divide by, no accepted post yet), not a zero.
NO_FIGURE = "—"


def money(amount: float | None) -> str:
    # The API's money format (significant digits however small), so both read the same.
    return NO_FIGURE if amount is None else usd(amount)


def utc_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def step(line: str) -> None:
    """One line of what `up`/`down` are doing, as a dim bullet."""
    console.print(Text.assemble(("·", "dim"), f" {line}"))


def node_line(node: NodeRecord) -> str:
    tier = node.tier or "rules"
    tokens = f"{node.prompt_tokens}+{node.completion_tokens} tok" if node.tier else ""
    extra = " (cache)" if node.cache_hit else ""
    extra += f" (fallback: {node.fallback_reason})" if node.fallback_reason else ""
    return f"{node.node:<9} {tier:<8} {node.duration_s:6.2f}s {tokens:>14} {money(node.cost_usd)}{extra}"


def post_panel(post: Post) -> Panel:
    style = "green" if post.status == "accepted" else "yellow"
    body = Text(post.text)
    if post.reasons:
        body.append("\n\nreasons: " + "; ".join(post.reasons), style="dim")
    subtitle = (
        f"{post.id} · {post.status} · {post.prompt_tokens + post.completion_tokens} tokens"
        f" · {money(post.cost_usd)} · tiers {', '.join(f'{k}={v}' for k, v in post.tiers.items())}"
    )
    # Text, not str: a Panel parses a str title as markup whatever the console says.
    return Panel(
        body, title=Text(f"{post.persona_id} · {post.platform}"), subtitle=Text(subtitle), border_style=style
    )


def id_column(table: Table, header: str, ids: Sequence[str]) -> None:
    """A column that never cuts an id: as wide as the longest, other columns wrap instead."""
    table.add_column(header, no_wrap=True, min_width=max((len(i) for i in ids), default=len(header)))


def post_block(post: Post) -> RenderableType:
    """A post as a line of its facts (id whole) over its text, wrapped and indented: a table's
    columns would leave the text a sliver of an 80-column terminal."""
    style = "green" if post.status == "accepted" else "yellow"
    head = Text.assemble(
        (post.id, "bold"),
        "  ",
        post.persona_id,
        "  ",
        (post.status, style),
        f"  {money(post.cost_usd)}  {post.prompt_tokens + post.completion_tokens} tokens  "
        f"{utc_time(post.created_at)} UTC",
    )
    return Group(head, Padding(Text(post.text), (0, 0, 1, 4)))
