"""Where the repository's files are, for tests that read manifests, dashboards and personas."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = REPO_ROOT / "cluster" / "grafana"
PROMETHEUS_DIR = REPO_ROOT / "cluster" / "prometheus"
PERSONA_DIR = REPO_ROOT / "personas"
