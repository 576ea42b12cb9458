"""The Grafana dashboards and the Prometheus rules and config, checked with the real Prometheus.

- each dashboard is JSON Grafana imports: uid, title, schemaVersion, unique panel ids, a layout
  without overlaps, every panel and target on the `${datasource}` variable, and the `datasource`
  and `persona` template variables;
- `promtool` accepts the scrape config and the rules, and the rules' unit tests pass; the
  PrometheusRule manifest matches alerts.yaml;
- every panel expression parses in a real `prometheus` (its HTTP API answers 400 `bad_data` to a
  parse error) once the Grafana variables are substituted;
- on synthetic data shaped like Ray's export (one series per worker process, persona actors
  appearing mid-window), every panel returns data, no result keeps the per-process `WorkerId`
  label, and "Spend in range" equals the spend recorded, actors born inside the range included.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chorus import metrics
from chorus import prometheus as chorus_prometheus
from chorus.prometheus import (
    ray_sd_file,
    render_config,
    render_prometheus_rule,
    start_local_prometheus,
    stop_local_prometheus,
)
from chorus.services import free_port
from tests.test_metrics import dashboard_exprs

ROOT = Path(__file__).resolve().parents[1]
GRAFANA_DIR = ROOT / "cluster" / "grafana"
PROMETHEUS_DIR = ROOT / "cluster" / "prometheus"
DASHBOARDS = sorted(GRAFANA_DIR.glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
LAYERS = {"chorus-business", "chorus-application", "chorus-infrastructure"}

# Values Grafana would substitute; `$__range` covers the synthetic data's last hour.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$persona": ".*",
    "${persona}": ".*",
}

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool not installed (scripts/setup.sh installs them)",
)


def _load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


# ---------------------------------------------------------------- structure


def test_three_layers_are_there() -> None:
    assert {_load(p)["uid"] for p in DASHBOARDS} >= LAYERS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable(path: Path) -> None:
    board = _load(path)
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"]), "Grafana uids: at most 40 of [a-zA-Z0-9_-]"
    assert board["title"].startswith("Chorus / ")
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert "id" not in board or board["id"] is None, "a fixed id clashes on import"
    panels = list(_panels(board))
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
    variables = {v["name"]: v for v in _load(path)["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    persona = variables["persona"]
    assert persona["type"] == "query" and persona["datasource"] == DATASOURCE
    assert persona["multi"] and persona["includeAll"] and persona["allValue"] == ".*"
    assert persona["query"]["query"].startswith("label_values(")
    assert persona["definition"] == persona["query"]["query"]


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = [_load(p) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


def test_panels_filter_on_persona_where_the_metric_has_it() -> None:
    # A business panel over a metric with a persona tag must follow the persona variable.
    with_persona = {f"ray_{d.name}" for d in metrics.METRICS.values() if "persona" in d.tags}
    business = _load(GRAFANA_DIR / "chorus-business.json")
    for panel in _panels(business):
        for target in panel.get("targets", []):
            for name in re.findall(r"\bray_chorus_\w+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if base in with_persona or name in with_persona:
                    assert f'{name}{{persona=~"$persona"' in target["expr"], (panel["title"], name)


# ---------------------------------------------------------------- rules and config (promtool)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@needs_prometheus
def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", "cluster/prometheus/alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_prometheus
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = _promtool("test", "rules", "cluster/prometheus/alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_prometheus
def test_promtool_checks_the_local_config() -> None:
    result = _promtool("check", "config", "cluster/prometheus/prometheus.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_the_issue() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yaml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for name in (
        "ChorusSpendRateAboveBudget",
        "ChorusJobErrorRatioHigh",
        "ChorusHTTPErrorRatioHigh",
        "ChorusHTTPLatencyP99High",
        "ChorusFallbackRatioHigh",
        "ChorusPersonaSilent",
    ):
        assert name in alerts
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_prometheus_rule_manifest_matches_alerts() -> None:
    on_disk = (PROMETHEUS_DIR / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert on_disk == render_prometheus_rule(), (
        "cluster/prometheus/prometheusrule.yaml is stale: "
        "python -m chorus.prometheus --render-rule > cluster/prometheus/prometheusrule.yaml"
    )
    manifest = yaml.safe_load(on_disk)
    assert manifest["kind"] == "PrometheusRule" and manifest["metadata"]["labels"]["release"] == "prometheus"


def test_kuberay_scraping_reuses_the_podmonitors() -> None:
    # cluster/monitoring.yaml's PodMonitors scrape the Ray pods; no second copy lives here.
    kinds = []
    for path in PROMETHEUS_DIR.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and "kind" in doc:
                kinds.append(doc["kind"])
    assert "PodMonitor" not in kinds and "ServiceMonitor" not in kinds
    monitors = list(yaml.safe_load_all((ROOT / "cluster" / "monitoring.yaml").read_text(encoding="utf-8")))
    assert {m["kind"] for m in monitors if m} == {"PodMonitor"}


# ---------------------------------------------------------------- synthetic Ray export

STEP_S = 15
FIRST_SAMPLE_S = 600  # a new series' first sample holds this many seconds' worth of increments
SPAN_S = 2 * 3600
# Values for every bounded tag key; two where panels filter on one of them.
TAG_VALUES = {
    "persona": ["p1", "p2"],
    "platform": ["x"],
    "status": ["accepted", "rejected"],
    "node": ["hook", "review"],
    "step": ["hook", "body"],
    "tier": ["local", "premium"],
    "model": ["m"],
    "cache": ["hit", "miss"],
    "reason": ["local_error", "idle"],
    "direction": ["in", "out"],
    "kind": ["TiersUnavailable", "budget_exceeded"],
}
NODE = {"instance": "10.0.0.1:8080", "ip": "10.0.0.1", "RayNodeType": "head", "IsHeadNode": "true"}
HTTP = {"application": "chorus-llm", "route": "/llm", "method": "POST"}
# Ray's and Serve's own series the dashboards use, with the labels Ray 2.60 exports.
RAY_GAUGES: list[tuple[str, dict[str, str], float]] = [
    ("ray_node_cpu_utilization", NODE, 42.0),
    ("ray_node_cpu_count", NODE, 2.0),
    ("ray_node_mem_used", NODE, 8e9),
    ("ray_node_mem_total", NODE, 24e9),
    ("ray_node_disk_usage", NODE, 10e9),
    ("ray_node_disk_free", NODE, 50e9),
    ("ray_node_gpus_utilization", {**NODE, "GpuIndex": "0", "GpuDeviceName": "L4"}, 60.0),
    ("ray_node_gram_used", {**NODE, "GpuIndex": "0", "GpuDeviceName": "L4"}, 9000.0),
    ("ray_object_store_memory", {"Location": "MMAP_SHM", "ObjectState": "SEALED"}, 1e6),
    ("ray_actors", {"Source": "gcs", "Name": "PersonaActor", "State": "ALIVE", "JobId": ""}, 3.0),
    ("ray_component_uss_mb", {"Component": "ray::PersonaActor", "pid": "11", "ip": "10.0.0.1"}, 76.0),
    ("ray_component_cpu_percentage", {"Component": "ray::PersonaActor", "pid": "11", "ip": "10.0.0.1"}, 5.0),
    ("ray_serve_deployment_replica_healthy", {"application": "chorus-llm", "deployment": "LocalTier"}, 1.0),
    ("ray_serve_num_ongoing_http_requests", {"node_id": "n", "node_ip_address": "10.0.0.1"}, 2.0),
    (
        "ray_serve_replica_processing_queries",
        {"application": "chorus-llm", "deployment": "LocalTier", "replica": "r1"},
        1.0,
    ),
]
RAY_COUNTERS: list[tuple[str, dict[str, str], float]] = [
    ("ray_serve_num_http_requests_total", {**HTTP, "status_code": "200"}, 2.0),
    ("ray_serve_num_http_requests_total", {**HTTP, "status_code": "500"}, 0.1),
    ("ray_serve_num_http_error_requests_total", {**HTTP, "error_code": "500"}, 0.1),
]
RAY_HISTOGRAMS: list[tuple[str, dict[str, str], list[float], float]] = [
    ("ray_serve_http_request_latency_ms", {**HTTP, "status_code": "200"}, [100, 1000, 10000, 60000], 800.0),
    (
        "ray_serve_deployment_processing_latency_ms",
        {"application": "chorus-llm", "deployment": "LocalTier", "replica": "r1", "route": "/llm"},
        [100, 1000, 10000, 60000],
        700.0,
    ),
]


@dataclass(frozen=True)
class Worker:
    """One Ray worker process exporting a series: born at `born_s` into the span, Ray-style,
    with its first increments already in its first sample."""

    worker_id: str
    born_s: int


# w-old lives through the whole span; w-new is a persona actor activated half an hour before its end.
WORKERS = [Worker("w-old", 0), Worker("w-new", SPAN_S - 1800)]


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _combos(tags: tuple[str, ...]) -> Iterator[dict[str, str]]:
    combos: list[dict[str, str]] = [{}]
    for key in tags:
        combos = [{**c, key: v} for c in combos for v in TAG_VALUES[key]]
    yield from combos


def _counter_value(worker: Worker, offset_s: int, per_s: float) -> float | None:
    if offset_s < worker.born_s:
        return None
    # The first sample already holds what the worker recorded before its first scrape (a job).
    return per_s * (offset_s - worker.born_s + FIRST_SAMPLE_S)


def _openmetrics(start: int) -> str:
    out: list[str] = []
    times = range(0, SPAN_S + 1, STEP_S)

    def counter_family(name: str, series: list[tuple[dict[str, str], Worker | None, float]]) -> None:
        out.append(f"# TYPE {name.removesuffix('_total')} counter")
        for labels, worker, per_s in series:
            for offset in times:
                value = _counter_value(worker or WORKERS[0], offset, per_s)
                if value is not None:
                    out.append(f"{name}{_labels(labels)} {value} {start + offset}")

    def histogram_family(
        name: str, series: list[tuple[dict[str, str], Worker | None]], bounds: list[float], observed: float
    ) -> None:
        out.append(f"# TYPE {name} histogram")
        for labels, worker in series:
            for offset in times:
                count = _counter_value(worker or WORKERS[0], offset, 1 / STEP_S)
                if count is None:
                    continue
                for bound in [*bounds, math.inf]:
                    le = "+Inf" if bound == math.inf else repr(float(bound))
                    value = count if observed <= bound else 0.0
                    out.append(f"{name}_bucket{_labels({**labels, 'le': le})} {value} {start + offset}")
                out.append(f"{name}_count{_labels(labels)} {count} {start + offset}")
                out.append(f"{name}_sum{_labels(labels)} {count * observed} {start + offset}")

    def gauge_family(name: str, series: list[tuple[dict[str, str], Worker | None, float]]) -> None:
        out.append(f"# TYPE {name} gauge")
        for labels, worker, value in series:
            for offset in times:
                if offset >= (worker or WORKERS[0]).born_s:
                    out.append(f"{name}{_labels(labels)} {value} {start + offset}")

    for d in metrics.METRICS.values():
        name = f"ray_{d.name}"
        per_worker = [({**c, "WorkerId": w.worker_id}, w) for c in _combos(d.tags) for w in WORKERS]
        if d.kind == "counter":
            counter_family(name, [(labels, w, _per_s(d.name, labels)) for labels, w in per_worker])
        elif d.kind == "histogram":
            histogram_family(name, list(per_worker), list(d.boundaries), d.boundaries[len(d.boundaries) // 2])
        else:
            gauge_family(name, [(labels, w, _gauge(d.name)) for labels, w in per_worker])
    for name, labels, value in RAY_GAUGES:
        gauge_family(name, [(labels, None, value)])
    for family in sorted({n for n, _, _ in RAY_COUNTERS}):
        counter_family(family, [(labels, None, per_s) for n, labels, per_s in RAY_COUNTERS if n == family])
    for name, labels, bounds, observed in RAY_HISTOGRAMS:
        histogram_family(name, [(labels, None)], bounds, observed)
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _per_s(name: str, labels: dict[str, str]) -> float:
    """Counter increments per second. Spend is priced so that spend + savings = baseline holds:
    premium calls cost their premium equivalent, local ones less, cache hits nothing."""
    if name == "chorus_llm_cost_usd_total":
        return 1e-5 if labels["tier"] == "premium" else 1e-6  # per step, two steps
    if name == "chorus_llm_premium_equivalent_usd_total":
        if labels["cache"] == "hit":
            return 4e-5
        return 2e-5 if labels["tier"] == "premium" else 3e-5
    return 0.01


def _gauge(name: str) -> float:
    return {
        "chorus_persona_spend_today_usd": 0.5,
        "chorus_persona_daily_budget_usd": 1.0,
        "chorus_redis_up": 1.0,
        "chorus_engagement_rate": 0.04,
    }.get(name, 3.0)


@dataclass(frozen=True)
class SyntheticPrometheus:
    url: str
    at: float  # evaluation time: the end of the synthetic data

    def query(self, expr: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr, "time": self.at}, timeout=30)


@pytest.fixture(scope="session")
def synthetic_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticPrometheus]:
    """A real Prometheus over backfilled data shaped like Ray's export, ending an hour ago."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        pytest.skip("prometheus/promtool not installed (scripts/setup.sh installs them)")
    data_dir = tmp_path_factory.mktemp("prometheus")
    end = (int(time.time()) // 3600 - 1) * 3600  # outside the head block's time range
    start = end - SPAN_S
    source = data_dir / "synthetic.om"
    source.write_text(_openmetrics(start), encoding="utf-8")
    result = _promtool("tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir / "data"))
    assert result.returncode == 0, result.stdout + result.stderr
    port = free_port()
    proc = start_local_prometheus(port, data_dir, sd_file=data_dir / "no-targets.json", scrape_interval_s=60)
    assert proc is not None
    try:
        yield SyntheticPrometheus(url=f"http://127.0.0.1:{port}", at=end)
    finally:
        stop_local_prometheus(proc)


ALL_EXPRS = list(dashboard_exprs())


@needs_prometheus
@pytest.mark.parametrize(("where", "expr"), ALL_EXPRS, ids=[w for w, _ in ALL_EXPRS])
def test_panel_query_parses_and_returns_data(
    synthetic_prometheus: SyntheticPrometheus, where: str, expr: str
) -> None:
    if expr.startswith("label_values("):
        selector = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        response = httpx.get(
            f"{synthetic_prometheus.url}/api/v1/label/persona/values",
            params={
                "match[]": selector,
                "start": synthetic_prometheus.at - SPAN_S,
                "end": synthetic_prometheus.at,
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"] == ["p1", "p2"]
        return
    response = synthetic_prometheus.query(substitute(expr))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{where}: {body.get('error')}"
    result = body["data"]["result"]
    assert result, f"{where}: no data"
    for series in result:
        assert "WorkerId" not in series["metric"], f"{where}: aggregate away the per-process WorkerId"
    values = [float(s["value"][1]) for s in result]
    assert any(math.isfinite(v) for v in values), f"{where}: only {values}"


@needs_prometheus
def test_a_parse_error_is_reported(synthetic_prometheus: SyntheticPrometheus) -> None:
    response = synthetic_prometheus.query("sum(rate(ray_chorus_posts_total[5m]) by")
    assert response.status_code == 400 and response.json()["errorType"] == "bad_data"


@needs_prometheus
def test_alert_expressions_evaluate(synthetic_prometheus: SyntheticPrometheus) -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yaml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            body = synthetic_prometheus.query(rule["expr"]).json()
            assert body["status"] == "success", f"{rule['alert']}: {body.get('error')}"


def _panel(uid: str, title: str) -> dict[str, Any]:
    board = _load(GRAFANA_DIR / f"{uid}.json")
    [panel] = [p for p in _panels(board) if p["title"] == title]
    return panel


def _instant(prom: SyntheticPrometheus, expr: str, persona: str) -> float:
    body = prom.query(substitute(expr.replace("$persona", persona))).json()
    assert body["status"] == "success", body
    [series] = body["data"]["result"]
    return float(series["value"][1])


@needs_prometheus
def test_spend_in_range_counts_actors_born_inside_the_range(
    synthetic_prometheus: SyntheticPrometheus,
) -> None:
    [target] = _panel("chorus-business", "Spend in range")["targets"]
    old, new = WORKERS
    window_start = SPAN_S - 3600
    assert new.born_s > window_start >= old.born_s
    expected = 0.0
    for labels in _combos(metrics.METRICS["chorus_llm_cost_usd_total"].tags):
        if labels["persona"] != "p1":
            continue
        per_s = _per_s("chorus_llm_cost_usd_total", labels)
        old_end, old_start, new_end = (
            _counter_value(old, SPAN_S, per_s),
            _counter_value(old, window_start, per_s),
            _counter_value(new, SPAN_S, per_s),
        )
        assert old_end is not None and old_start is not None and new_end is not None
        expected += old_end - old_start + new_end
    assert _instant(synthetic_prometheus, target["expr"], "p1") == pytest.approx(expected, rel=1e-6)
    # increase() would have dropped what the new actor recorded before its first scrape.
    naive = _instant(
        synthetic_prometheus, 'sum(increase(ray_chorus_llm_cost_usd_total{persona="p1"}[1h]))', "p1"
    )
    assert naive < expected * 0.99


@needs_prometheus
def test_spend_and_savings_add_up_to_the_all_premium_baseline(
    synthetic_prometheus: SyntheticPrometheus,
) -> None:
    panel = _panel("chorus-business", "Spend + savings = all-premium baseline (per hour)")
    spend, tiering, cache, baseline = (
        _instant(synthetic_prometheus, t["expr"], ".*") for t in panel["targets"]
    )
    assert min(spend, tiering, cache) > 0
    assert spend + tiering + cache == pytest.approx(baseline, rel=1e-6)
    for title, value in (
        ("Saved by tiering", tiering),
        ("Saved by cache", cache),
        ("All-premium baseline", baseline),
    ):
        [target] = _panel("chorus-business", title)["targets"]
        # The stat panels over `$__range` (1h here) agree with the hourly series.
        assert _instant(synthetic_prometheus, target["expr"], ".*") == pytest.approx(value, rel=1e-6)


# ---------------------------------------------------------------- chorus.prometheus


def test_render_config_points_at_the_discovery_file_and_rules(tmp_path: Path) -> None:
    config = yaml.safe_load(render_config(tmp_path / "sd.json", tmp_path / "rules.yaml", scrape_interval_s=2))
    assert config["rule_files"] == [str(tmp_path / "rules.yaml")]
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "sd.json")]
    assert config["global"]["scrape_interval"] == config["global"]["scrape_timeout"] == "2000ms"


def test_ray_sd_file_prefers_an_explicit_temp_dir(tmp_path: Path) -> None:
    assert ray_sd_file(tmp_path) == tmp_path / "prom_metrics_service_discovery.json"


def test_no_binary_means_no_prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chorus_prometheus, "prometheus_binary", lambda: None)
    assert start_local_prometheus(free_port(), tmp_path, sd_file=tmp_path / "sd.json") is None
    assert stop_local_prometheus(None) is False


@needs_prometheus
def test_local_prometheus_scrapes_the_discovered_targets_with_the_rules(tmp_path: Path) -> None:
    # A stand-in for a Ray node's metrics endpoint, listed in a discovery file like Ray's.
    target_port = free_port()
    sd = tmp_path / "prom_metrics_service_discovery.json"
    sd.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": [f"127.0.0.1:{target_port}"]}]))
    port = free_port()
    proc = start_local_prometheus(port, tmp_path / "prom", sd_file=sd, scrape_interval_s=1)
    assert proc is not None
    try:
        url = f"http://127.0.0.1:{port}"
        groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert {g["name"] for g in groups} == {
            g["name"] for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yaml").read_text())["groups"]
        }
        deadline = time.monotonic() + 30
        while True:
            active = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            if active:
                break
            assert time.monotonic() < deadline, "the discovery file's target never showed up"
            time.sleep(0.2)
        assert [t["labels"]["instance"] for t in active] == [f"127.0.0.1:{target_port}"]
        with pytest.raises(RuntimeError, match="in use"):  # the same port
            start_local_prometheus(port, tmp_path / "other", sd_file=sd)
        with pytest.raises(RuntimeError, match="already uses"):  # the same data dir
            start_local_prometheus(free_port(), tmp_path / "prom", sd_file=sd)
    finally:
        assert stop_local_prometheus(proc) is True
    assert proc.returncode is not None


@needs_prometheus
def test_detached_prometheus_is_stopped_through_its_data_dir(tmp_path: Path) -> None:
    proc = start_local_prometheus(free_port(), tmp_path, sd_file=tmp_path / "sd.json", detach=True)
    assert proc is not None
    assert os.getsid(proc.pid) == proc.pid, "a detached Prometheus leads its own session"
    assert stop_local_prometheus(tmp_path) is True
    assert proc.wait(10) is not None
    assert stop_local_prometheus(tmp_path) is False
    assert not (tmp_path / "prometheus.pid").exists()
