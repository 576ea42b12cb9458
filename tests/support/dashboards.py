"""Reading the Grafana dashboards and the alert rules: their files, panels and PromQL.

Shared by the dashboard and rule tests (tests/cluster/) and the metric-name checks
(tests/core/test_metrics.py), so each reads them one way.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import GRAFANA_DIR, PROMETHEUS_DIR, REPO_ROOT

DASHBOARDS = sorted(GRAFANA_DIR.glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool not installed (scripts/setup.sh installs them)",
)


def load_dashboard(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def dashboard_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those inside collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable of every dashboard."""
    for path in sorted(GRAFANA_DIR.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        stack = list(board.get("panels", []))
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield f"{path.name} / {panel.get('title')} / {target.get('refId')}", target["expr"]
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var.get("query")
                text = query.get("query") if isinstance(query, dict) else query
                if text:
                    yield f"{path.name} / variable {var['name']}", text


def alert_exprs() -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yaml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"alerts.yaml / {rule.get('alert') or rule.get('record')}", rule["expr"]


def series_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names, functions and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", text):
        word = match.group(1)
        if word.startswith(("ray_", "chorus_", "serve_")) or ":" in word:
            names.add(word)
    return names
