"""`chorus up --with-prometheus` and `chorus down` as the README's run command uses them.

A second, real Ray head (started by `chorus up` itself, beside the suite's private Ray), the
suite's redis-server under a key prefix of its own, the real Serve applications and a real
Prometheus; `chorus down` must stop what `up` started and leave the Redis it only used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from chorus.settings import load_settings
from ops import local_stack
from tests.support.personas import EXAMPLE_PERSONA, unique_id
from tests.support.processes import free_port
from tests.support.tiers import TEST_MODEL

CHORUS = [shutil.which("chorus") or ""] if shutil.which("chorus") else [sys.executable, "-m", "cli"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed"),
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_up_with_prometheus_then_down_stops_what_it_started(redis_url: str, tmp_path: Path) -> None:
    serve_port, prometheus_port = free_port(), free_port()
    prefix = unique_id("updown")
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "CHORUS_REDIS__URL": redis_url,
        "CHORUS_REDIS__KEY_PREFIX": prefix,
        "CHORUS_SERVE__PORT": str(serve_port),
        "CHORUS_LOCAL__MODEL": TEST_MODEL,
        "COLUMNS": "200",
    }
    env.pop("CHORUS_API_URL", None)
    env.pop("CHORUS_API_KEY", None)
    # `up` joins a cluster recorded on this machine rather than starting one: there must be none,
    # or this test would deploy into (and `down` would clear) somebody else's.
    assert local_stack.running_cluster(load_settings(ray_address=None)) is None, "a Ray cluster is running"
    personas = tmp_path / "personas"
    personas.mkdir()
    shutil.copy(EXAMPLE_PERSONA, personas / EXAMPLE_PERSONA.name)

    def chorus(*args: str, timeout_s: float = 600) -> tuple[int, str]:
        done = subprocess.run([*CHORUS, *args], capture_output=True, text=True, timeout=timeout_s, env=env)
        return done.returncode, done.stdout + done.stderr

    up = ["up", "--with-prometheus", "--prometheus-port", str(prometheus_port), "--personas", str(personas)]
    started_ray: int | None = None
    try:
        code, out = chorus(*up)
        assert code == 0, out
        assert "starting a local Ray head" in out and "Redis answers at" in out, out
        assert "admin API key (shown once" in out and "loaded 1 personas" in out, out
        # What `down` will read: the processes `up` started.
        record = json.loads((tmp_path / "data" / "chorus" / "services.json").read_text())
        started_ray = record["ray"]["pid"]
        assert record.get("redis") is None  # it answered, so `up` only used it
        # The local tier's service key: generated once, readable by this user only, and what the
        # fleet's own clients authenticate with (readiness checks the tier with it).
        key_file = tmp_path / "data" / "chorus" / "local-tier-key"
        assert "generated the local tier's service key" in out, out
        assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.read_text().strip()
        serve_url = f"http://127.0.0.1:{serve_port}"
        ready = httpx.get(f"{serve_url}/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["checks"]["local_tier"] == "ok", ready.text
        anonymous = httpx.post(f"{serve_url}/llm/v1/completions", json={"model": TEST_MODEL, "prompt": "hi"})
        assert anonymous.status_code == 401, anonymous.text

        code, out = chorus("status")
        assert code == 0, out
        assert "redis" in out and "local_tier" in out and "started by chorus up" in out, out
        code, out = chorus("personas", "list")
        assert code == 0 and EXAMPLE_PERSONA.stem in out, out

        # Prometheus finds this head through Ray's service-discovery file and scrapes it.
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        deadline = time.monotonic() + 60
        while True:
            query = httpx.get(
                f"{prometheus}/api/v1/query", params={"query": 'up{job="ray"} == 1'}, timeout=10
            )
            if query.status_code == 200 and query.json()["data"]["result"]:
                break
            assert time.monotonic() < deadline, f"Prometheus never scraped the Ray head: {query.text}"
            time.sleep(1)

        # A second `up` reuses everything: the running head, the apps and the saved key.
        code, out = chorus(*up[:1], "--personas", str(personas))
        assert code == 0, out
        assert "starting a local Ray head" not in out and "using the admin key saved" in out, out
        assert "generated the local tier's service key" not in out, out
    finally:
        code, out = chorus("down")
    assert code == 0, out
    assert "Ray head at" in out and "Prometheus" in out, out
    assert started_ray is not None and not _alive(started_ray)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{serve_port}/healthz", timeout=5)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{prometheus_port}/-/ready", timeout=5)
    # The Redis it only used is still up, with the personas `up` loaded.
    client = redis.Redis.from_url(redis_url)
    assert client.ping() and client.exists(f"{prefix}:persona:{EXAMPLE_PERSONA.stem}")
