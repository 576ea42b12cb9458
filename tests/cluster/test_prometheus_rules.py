"""The Prometheus config and alert rules in cluster/prometheus/: `promtool` accepts them, the
rules' unit tests pass, the alerts cover what they must, and the PrometheusRule manifest matches
alerts.yaml.
"""

from __future__ import annotations

import yaml

from ops.prometheus import (
    render_prometheus_rule,
)
from tests.support.dashboards import (
    needs_prometheus,
    promtool,
)
from tests.support.paths import PROMETHEUS_DIR, REPO_ROOT


@needs_prometheus
def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "cluster/prometheus/alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_prometheus
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", "cluster/prometheus/alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_prometheus
def test_promtool_checks_the_local_config() -> None:
    result = promtool("check", "config", "cluster/prometheus/prometheus.yaml")
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
        "python -m ops.prometheus --render-rule > cluster/prometheus/prometheusrule.yaml"
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
    monitors = list(
        yaml.safe_load_all((REPO_ROOT / "cluster" / "monitoring.yaml").read_text(encoding="utf-8"))
    )
    assert {m["kind"] for m in monitors if m} == {"PodMonitor"}
