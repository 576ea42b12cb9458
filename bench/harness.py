"""What every benchmark needs: a throwaway redis-server, the local Ray/Serve stack, a result table."""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from chorus.settings import Settings
from ops.deploy import connect_ray, deploy_local_tier, start_serve

# Re-exported: every benchmark takes its ports and its Redis from here.
from ops.local_stack import throwaway_redis as throwaway_redis
from ops.ports import free_port as free_port

console = Console(width=140)  # no wrapping when stdout is not a terminal

# The service key of the benchmark's own local tier (its settings' local.api_key): the tier takes
# no other key for completions.
SERVICE_KEY = secrets.token_urlsafe(24)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    digits = 2 if high < 10 else 1
    return f"{low:.{digits}f}-{high:.{digits}f}"


@contextmanager
def ray_serve_tier(settings: Settings) -> Iterator[None]:
    import ray
    from ray import serve

    try:
        connect_ray(settings)
        start_serve(settings)
        deploy_local_tier(settings)
        yield
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


@dataclass(frozen=True)
class Row:
    name: str
    measured: str
    spread: str
    baseline: str
    ratio: str
    target: str
    passed: bool | None


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return "info"
    return "[green]PASS[/green]" if passed else "[red]MISS[/red]"


def report(title: str, rows: list[Row]) -> None:
    table = Table(title=title)
    columns = ("Benchmark", "Measured", "Min-max", "Baseline", "Ratio / Δ", "Target", "Result")
    for column in columns:
        table.add_column(column, justify="left" if column == "Benchmark" else "right")
    for row in rows:
        table.add_row(
            row.name, row.measured, row.spread, row.baseline, row.ratio, row.target, _verdict(row.passed)
        )
    console.print(table)
