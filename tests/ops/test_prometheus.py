"""ops/prometheus.py: the rendered config, the discovery file, and a local Prometheus started and
stopped (attached or detached) that scrapes what the discovery file names, with the rules.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
import yaml

from ops import prometheus as ops_prometheus
from ops.prometheus import (
    ray_sd_file,
    render_config,
    start_local_prometheus,
    stop_local_prometheus,
)
from tests.support.dashboards import (
    needs_prometheus,
)
from tests.support.paths import PROMETHEUS_DIR
from tests.support.processes import free_port

# ---------------------------------------------------------------- ops.prometheus


def test_render_config_points_at_the_discovery_file_and_rules(tmp_path: Path) -> None:
    config = yaml.safe_load(render_config(tmp_path / "sd.json", tmp_path / "rules.yaml", scrape_interval_s=2))
    assert config["rule_files"] == [str(tmp_path / "rules.yaml")]
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "sd.json")]
    assert config["global"]["scrape_interval"] == config["global"]["scrape_timeout"] == "2000ms"


def test_ray_sd_file_prefers_an_explicit_temp_dir(tmp_path: Path) -> None:
    assert ray_sd_file(tmp_path) == tmp_path / "prom_metrics_service_discovery.json"


def test_no_binary_means_no_prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_prometheus, "prometheus_binary", lambda: None)
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
