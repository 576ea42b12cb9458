"""The Grafana dashboards ConfigMap (cluster/grafana-dashboards.yaml) matches its generator,
cluster/gen_dashboards_configmap.py, which round-trips and checks what it writes.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from cluster import gen_dashboards_configmap as gen
from tests.support.manifests import (
    K8S_VERSION,
)
from tests.support.paths import REPO_ROOT

# ---------------------------------------------------------------- Grafana dashboards


def test_dashboards_configmap_matches_generator() -> None:
    on_disk = (REPO_ROOT / "cluster" / "grafana-dashboards.yaml").read_text(encoding="utf-8")
    assert on_disk == gen.render(REPO_ROOT / "cluster" / "grafana"), (
        "cluster/grafana-dashboards.yaml is stale: run `python -m cluster.gen_dashboards_configmap`"
    )
    configmap = yaml.safe_load(on_disk)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((REPO_ROOT / "cluster" / "grafana").glob("*.json"))
    assert sorted(configmap["data"] or {}) == [f.name for f in files]
    for f in files:
        assert configmap["data"][f.name] == f.read_text(encoding="utf-8")


def test_dashboards_generator_round_trips_and_checks(tmp_path: Path) -> None:
    grafana = tmp_path / "grafana"
    grafana.mkdir()
    out = tmp_path / "dashboards.yaml"
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out)]) == 0
    empty = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert empty["data"] == {}
    kubernetes_validate.validate(empty, K8S_VERSION, strict=True)

    contents = {
        "fleet.json": '{\n  "title": "Fleet \\"ops\\"",\n  "panels": []\n}\n',
        "costs.json": '{"title": "Costs ✓",\t"panels": [ ]}  \n\n',
        "bare.json": "{}",
    }
    for name, text in contents.items():
        (grafana / name).write_text(text, encoding="utf-8")
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out), "--check"]) == 1
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out)]) == 0
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out), "--check"]) == 0
    configmap = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert configmap["data"] == contents
    kubernetes_validate.validate(configmap, K8S_VERSION, strict=True)

    (grafana / "bad.json").write_text("{not json", encoding="utf-8")
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out)]) == 2
