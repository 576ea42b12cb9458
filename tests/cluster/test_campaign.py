"""Batch campaigns through the real `ray job submit` CLI against a real `ray start --head`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from actors.fleet import Fleet
from chorus.models import PostQuery
from chorus.settings import Settings
from cluster.campaign import CampaignReport
from tests.support.paths import REPO_ROOT
from tests.support.personas import unique_id
from tests.support.processes import free_port

PERSONAS = ["personas/ember-and-oak-coffee.yaml", "personas/plain-cents.yaml"]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A second, separate Ray cluster started the way an operator would, on loopback."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    dashboard = free_port()
    # Short: Ray's unix sockets live under it, and socket paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    # --block keeps the head in the foreground: ending it stops this cluster and nothing else
    # (`ray stop` would stop every Ray on the machine, the test session's own included).
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            # Ports of their own: the test session's Ray already holds the default agent port.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while True:
        try:
            # 401 is an answer too: Ray 2.60 enables token auth, which the ray CLI handles itself.
            if httpx.get(f"{address}/api/version", timeout=2).status_code in (200, 401):
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or head.poll() is not None:
            head.kill()
            pytest.fail("ray start --head did not come up")
        time.sleep(0.5)
    yield address
    head.send_signal(signal.SIGTERM)  # the head drains and stops the processes it started
    try:
        head.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


async def test_campaign_via_ray_job_submit_writes_a_complete_report(
    ray_head: str, settings: Settings, local_tier: str, tmp_path: Path
) -> None:
    prefix = unique_id("campaign")
    env = {
        "CHORUS_REDIS__URL": settings.redis.url,
        "CHORUS_REDIS__KEY_PREFIX": prefix,
        # The campaign's persona actors run on the new cluster and reach the test session's
        # local tier over HTTP, as workers reach a shared Serve tier in a real cluster.
        "CHORUS_LOCAL__BASE_URL": local_tier,
        "CHORUS_LOCAL__MODEL": settings.local.model,
        # As a cluster's pods get it from their Secret.
        "CHORUS_LOCAL__API_KEY": settings.local.service_token(),
    }
    out = tmp_path / "report.json"
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    submit = [
        ray_bin,
        "job",
        "submit",
        "--address",
        ray_head,
        "--working-dir",
        str(REPO_ROOT),
        "--runtime-env-json",
        json.dumps({"env_vars": env}),
        "--",
        "python",
        "-m",
        "cluster.campaign",
        "--personas",
        *PERSONAS,
        "--posts-per-persona",
        "1",
        "--out",
        str(out),
    ]
    for _ in range(60):
        job = subprocess.run(submit, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
        # A fresh head answers before its dashboard agent can take jobs; Ray says to retry.
        if "No available agent to submit job" not in job.stdout + job.stderr:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout
    report = CampaignReport.model_validate_json(out.read_text())
    assert [p.persona_id for p in report.personas] == ["ember-and-oak-coffee", "plain-cents"]
    fleet = Fleet(
        settings.model_copy(update={"redis": settings.redis.model_copy(update={"key_prefix": prefix})})
    )
    for persona in report.personas:
        assert persona.posts == 1 and persona.accepted + persona.rejected == 1
        assert persona.cost_usd > 0 and persona.completion_tokens > 0
        assert set(persona.node_latency_p50_s) >= {"plan", "hook", "body", "review", "finalize"}
        assert persona.tier_mix["body"] == {"local": 1}
        # The report agrees with what the fleet (and so the API) holds for the persona.
        stored = (await fleet.posts(PostQuery(persona_id=persona.persona_id))).posts
        assert [p.id for p in stored] == persona.jobs
        stats = await fleet.stats(persona.persona_id)
        assert stats.posts == persona.posts
        assert stats.cost_usd == pytest.approx(persona.cost_usd, rel=1e-9)
    assert report.totals["posts"] == 2
    await fleet.redis.aclose()


def test_campaign_cli_refuses_a_bad_persona_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: Not A Slug\n")
    result = subprocess.run(
        [sys.executable, "-m", "cluster.campaign", "--personas", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "id" in lines[0]
