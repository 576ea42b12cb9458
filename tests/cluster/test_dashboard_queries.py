"""Every dashboard panel and alert rule as PromQL in a real Prometheus, over synthetic data.

The data is shaped like Ray's export (one series per worker process, persona actors appearing
mid-window): every panel expression parses once the Grafana variables are substituted (the HTTP
API answers 400 `bad_data` to a parse error), returns data, keeps no per-process `WorkerId`
label, and "Spend in range" equals the spend recorded, actors born inside the range included.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from chorus import metrics
from ops.prometheus import (
    start_local_prometheus,
    stop_local_prometheus,
)
from tests.support.dashboards import (
    dashboard_exprs,
    dashboard_panels,
    load_dashboard,
    needs_prometheus,
    promtool,
)
from tests.support.paths import GRAFANA_DIR, PROMETHEUS_DIR
from tests.support.processes import free_port

# Values Grafana would substitute; `$__range` covers the synthetic data's last hour.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$persona": ".*",
    "${persona}": ".*",
}


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


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
    "outcome": ["published", "failed"],
    "decision": ["approve", "reject"],
    "state": ["pending_approval", "published"],
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
    result = promtool("tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir / "data"))
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
    board = load_dashboard(GRAFANA_DIR / f"{uid}.json")
    [panel] = [p for p in dashboard_panels(board) if p["title"] == title]
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
