"""The Grafana dashboards (cluster/grafana/*.json) as Grafana imports them.

Each has a uid, a title, a schemaVersion, unique panel ids and a layout without overlaps; every
panel and target is on the `${datasource}` variable; the `datasource` and `persona` template
variables are there, and business panels follow the persona variable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chorus import metrics
from tests.support.dashboards import (
    DASHBOARDS,
    DATASOURCE,
    dashboard_panels,
    load_dashboard,
)
from tests.support.paths import GRAFANA_DIR

LAYERS = {"chorus-business", "chorus-application", "chorus-infrastructure"}


# ---------------------------------------------------------------- structure


def test_three_layers_are_there() -> None:
    assert {load_dashboard(p)["uid"] for p in DASHBOARDS} >= LAYERS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable(path: Path) -> None:
    board = load_dashboard(path)
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"]), "Grafana uids: at most 40 of [a-zA-Z0-9_-]"
    assert board["title"].startswith("Chorus / ")
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert "id" not in board or board["id"] is None, "a fixed id clashes on import"
    panels = list(dashboard_panels(board))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), "every panel says which question it answers"
        assert panel["datasource"] == DATASOURCE, f"{panel['title']}: use the ${{datasource}} variable"
        targets = panel["targets"]
        assert targets, panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["datasource"] == DATASOURCE, f"{panel['title']} {target['refId']}"
            assert target["expr"].strip()
    assert "chorus" in board["tags"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_templating_has_datasource_and_persona(path: Path) -> None:
    variables = {v["name"]: v for v in load_dashboard(path)["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    persona = variables["persona"]
    assert persona["type"] == "query" and persona["datasource"] == DATASOURCE
    assert persona["multi"] and persona["includeAll"] and persona["allValue"] == ".*"
    assert persona["query"]["query"].startswith("label_values(")
    assert persona["definition"] == persona["query"]["query"]


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = [load_dashboard(p) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


def test_panels_filter_on_persona_where_the_metric_has_it() -> None:
    # A business panel over a metric with a persona tag must follow the persona variable.
    with_persona = {f"ray_{d.name}" for d in metrics.METRICS.values() if "persona" in d.tags}
    business = load_dashboard(GRAFANA_DIR / "chorus-business.json")
    for panel in dashboard_panels(business):
        for target in panel.get("targets", []):
            for name in re.findall(r"\bray_chorus_\w+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if base in with_persona or name in with_persona:
                    assert f'{name}{{persona=~"$persona"' in target["expr"], (panel["title"], name)
