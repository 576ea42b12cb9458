"""Chorus's metric declarations, the calls that record them, and the names dashboards and alerts use.

- every metric is declared once, with help text, a valid name and bounded tag keys;
- recording with the wrong tags (or an undeclared name) raises;
- every `metrics.inc/observe/set_gauge` call in the code names a declared metric of the right kind
  with exactly its tag keys (checked on the source, so paths no test runs are covered too);
- every `ray_chorus_*` name in the Grafana dashboards and the alert rules, less Ray's `ray_` prefix
  and the histogram suffixes, is a declared metric of a kind that has that series; and every
  declared metric is shown on some dashboard.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterator

import pytest

from chorus import metrics
from tests.support.dashboards import alert_exprs, dashboard_exprs, series_names
from tests.support.paths import GRAFANA_DIR, REPO_ROOT

SOURCE_DIRS = ["chorus", "actors", "graphs", "serve"]
RECORDERS = {"inc": "counter", "observe": "histogram", "set_gauge": "gauge"}
NAME_RE = re.compile(r"^chorus_[a-z][a-z0-9_]*[a-z0-9]$")
# Series of one metric as Prometheus scrapes it from Ray: suffix -> kinds that have it.
SERIES_SUFFIXES = {"_bucket": {"histogram"}, "_sum": {"histogram"}, "_count": {"histogram"}}


# ---------------------------------------------------------------- declarations


def test_every_metric_is_declared_once() -> None:
    names = [d.name for d in metrics._DEFS]
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    assert not duplicates, f"declared more than once: {duplicates}"
    assert set(metrics.METRICS) == set(names)
    assert all(metrics.METRICS[d.name] is d for d in metrics._DEFS)


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_declaration_is_well_formed(name: str) -> None:
    d = metrics.METRICS[name]
    assert NAME_RE.fullmatch(d.name), "names are chorus_<snake_case> (Ray adds the ray_ prefix)"
    assert d.description.strip() and len(d.description) >= 10, "help text is required"
    assert d.kind in ("counter", "gauge", "histogram")
    assert len(set(d.tags)) == len(d.tags), "a tag key is listed twice"
    unbounded = set(d.tags) - metrics.BOUNDED_TAGS
    assert not unbounded, f"tag keys outside BOUNDED_TAGS: {sorted(unbounded)}"
    assert "WorkerId" not in d.tags, "Ray adds WorkerId itself"
    if d.kind == "counter":
        assert d.name.endswith("_total"), "counters end in _total"
    else:
        assert not d.name.endswith("_total"), "only counters end in _total"
    if d.kind == "histogram":
        assert d.boundaries, "a histogram needs bucket boundaries"
        assert list(d.boundaries) == sorted(set(d.boundaries)), "boundaries must increase strictly"
        assert d.boundaries[0] > 0
        assert not d.name.endswith(("_bucket", "_sum", "_count")), "suffixes are Prometheus's"
    else:
        assert not d.boundaries


def test_bounded_tags_are_not_free_text_keys() -> None:
    # Keys that would invite unbounded values (ids of posts or jobs, messages, prompts).
    assert not metrics.BOUNDED_TAGS & {"job", "job_id", "post", "post_id", "message", "error", "text"}


# ---------------------------------------------------------------- recording


@pytest.fixture()
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_METRICS_ENABLED", "1")


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize(
    ("call", "name", "tags"),
    [
        (metrics.inc, "chorus_posts_total", {"persona": "p"}),  # missing keys
        (metrics.inc, "chorus_posts_total", {"persona": "p", "platform": "x", "status": "a", "node": "n"}),
        (metrics.inc, "chorus_activations_total", {"persona": "p"}),  # takes no tags
        (metrics.observe, "chorus_node_duration_seconds", {"persona": "p", "step": "hook"}),  # wrong key
        (metrics.set_gauge, "chorus_persona_daily_budget_usd", {}),
    ],
)
def test_recording_with_wrong_tags_raises(call: object, name: str, tags: dict[str, str]) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=name):
        call(name, 1.0, **tags)


@pytest.mark.usefixtures("recording")
def test_recording_an_undeclared_metric_raises() -> None:
    with pytest.raises(KeyError):
        metrics.inc("chorus_not_declared_total")


@pytest.mark.usefixtures("recording")
def test_recording_with_the_declared_tags_works() -> None:
    metrics.inc("chorus_posts_total", persona="p", platform="x", status="accepted")
    metrics.observe("chorus_node_duration_seconds", 0.5, persona="p", node="hook")
    metrics.set_gauge("chorus_active_personas", 3)


def test_disabled_metrics_record_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_METRICS_ENABLED", "0")
    assert not metrics.enabled()
    monkeypatch.setattr(metrics, "_metric", lambda name: pytest.fail(f"{name} recorded while disabled"))
    metrics.inc("chorus_posts_total", persona="p", platform="x", status="accepted")
    metrics.observe("chorus_job_wait_seconds", 1.0)
    metrics.set_gauge("chorus_active_personas", 1)


# ---------------------------------------------------------------- the calls in the code


def _recording_calls() -> Iterator[tuple[str, str, str, set[str] | None]]:
    """(where, recorder, metric name, tag keys or None when passed as **kwargs)."""
    for folder in SOURCE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "metrics"
                    and node.func.attr in RECORDERS
                ):
                    continue
                where = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                    f"{where}: name the metric with a string literal so it can be checked"
                )
                keys: set[str] | None = {k.arg for k in node.keywords if k.arg is not None}
                if any(k.arg is None for k in node.keywords):
                    keys = None
                yield where, node.func.attr, first.value, keys


def test_the_code_records_metrics() -> None:
    names = {name for _, _, name, _ in _recording_calls()}
    assert {"chorus_llm_cost_usd_total", "chorus_posts_total", "chorus_active_personas"} <= names


def test_every_recording_call_matches_its_declaration() -> None:
    problems = []
    for where, recorder, name, keys in _recording_calls():
        d = metrics.METRICS.get(name)
        if d is None:
            problems.append(f"{where}: {name} is not declared in chorus/metrics.py")
            continue
        if d.kind != RECORDERS[recorder]:
            problems.append(f"{where}: metrics.{recorder} on {name}, a {d.kind}")
        if keys is not None and keys != set(d.tags):
            problems.append(f"{where}: {name} takes tags {sorted(d.tags)}, the call passes {sorted(keys)}")
    assert not problems, "\n".join(problems)


def test_every_declared_metric_is_recorded_somewhere() -> None:
    recorded = {name for _, _, name, _ in _recording_calls()}
    assert set(metrics.METRICS) - recorded == set()


# ---------------------------------------------------------------- names in dashboards and alerts


def _chorus_metric(series: str) -> tuple[str, str]:
    """(declared name, suffix) for a scraped series name `ray_chorus_...`."""
    name = series.removeprefix("ray_")
    for suffix in SERIES_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in metrics.METRICS:
            return name.removesuffix(suffix), suffix
    return name, ""


def test_series_names_parser() -> None:
    expr = (
        'sum by (persona, le) (max_over_time(ray_chorus_a_bucket{persona=~"$persona", x="ray_y"}[$__range])'
        " - (ray_chorus_b_total offset 1h or 0 * vector(0))) / on (persona) ray_node_cpu_count"
    )
    assert series_names(expr) == {"ray_chorus_a_bucket", "ray_chorus_b_total", "ray_node_cpu_count"}
    assert series_names('label_values(ray_chorus_c_total{persona!="none"}, persona)') == {
        "ray_chorus_c_total"
    }


def _all_exprs() -> list[tuple[str, str]]:
    return [*dashboard_exprs(), *alert_exprs()]


def test_dashboards_and_alerts_exist() -> None:
    assert len(list(GRAFANA_DIR.glob("*.json"))) >= 3
    assert len(list(alert_exprs())) >= 5


@pytest.mark.parametrize(("where", "expr"), _all_exprs(), ids=[w for w, _ in _all_exprs()])
def test_every_chorus_name_in_dashboards_and_alerts_is_declared(where: str, expr: str) -> None:
    for series in series_names(expr):
        assert not series.startswith("chorus_"), (
            f"{series}: Ray exports Chorus metrics with the ray_ prefix (ray_{series})"
        )
        if not series.startswith("ray_chorus_"):
            continue
        name, suffix = _chorus_metric(series)
        assert name in metrics.METRICS, f"{series}: {name} is not declared in chorus/metrics.py"
        kind = metrics.METRICS[name].kind
        if suffix:
            assert kind in SERIES_SUFFIXES[suffix], f"{series}: a {kind} has no {suffix} series"
        else:
            assert kind != "histogram", f"{series}: use {name}_bucket, _sum or _count"


def test_every_declared_metric_is_on_a_dashboard() -> None:
    shown = {
        _chorus_metric(series)[0]
        for _, expr in dashboard_exprs()
        for series in series_names(expr)
        if series.startswith("ray_chorus_")
    }
    assert set(metrics.METRICS) - shown == set()
