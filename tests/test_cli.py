"""The `chorus` command as a user runs it: a subprocess talking to the test API over HTTP."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from chorus.services import free_port
from tests.conftest import EXAMPLE_PERSONA, unique_id

CHORUS = [shutil.which("chorus") or ""] if shutil.which("chorus") else [sys.executable, "-m", "chorus.cli"]

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture()
def chorus(api: str, admin_key: str, tmp_path: Path) -> Run:
    """Runs `chorus ARGS...` against the test API; returns (exit code, stdout, stderr)."""
    env = {
        **os.environ,
        "CHORUS_API_URL": api,
        "CHORUS_API_KEY": admin_key,
        # Nothing from the developer's own ~/.config/chorus or ~/.local/share/chorus.
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "COLUMNS": "200",
    }

    def run(*args: str, key: str | None = None, url: str | None = None) -> tuple[int, str, str]:
        overrides = {"CHORUS_API_KEY": key} if key else {}
        overrides |= {"CHORUS_API_URL": url} if url else {}
        done = subprocess.run(
            [*CHORUS, *args], capture_output=True, text=True, timeout=600, env={**env, **overrides}
        )
        return done.returncode, done.stdout, done.stderr

    return run


def persona_file(tmp_path: Path, persona_id: str, **changes: object) -> Path:
    data = yaml.safe_load(EXAMPLE_PERSONA.read_text())
    data.update(id=persona_id, **changes)
    path = tmp_path / f"{persona_id}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_apply_of_a_bad_file_is_one_line_naming_the_field(chorus: Run, tmp_path: Path) -> None:
    bad = persona_file(tmp_path, unique_id("cli"), platforms=[{"name": "myspace"}])
    code, out, err = chorus("personas", "apply", str(bad))
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "platforms[0].name" in err and str(bad) in err

    good = persona_file(tmp_path, unique_id("cli"))
    code, out, err = chorus("personas", "apply", str(good))
    assert code == 0, err
    assert out.strip() == f"created {good.stem}"
    code, out, _ = chorus("personas", "list")
    assert code == 0 and good.stem in out


def test_generate_prints_each_node_as_it_finishes_then_the_post(chorus: Run, tmp_path: Path) -> None:
    # No cached answers: this run pays for its model calls, and leaves none for other tests.
    rules = {"required_hashtags": ["#EmberAndOak"], "no_cache_steps": ["hook", "body", "rewrite"]}
    path = persona_file(tmp_path, unique_id("cli"), rules=rules)
    assert chorus("personas", "apply", str(path))[0] == 0
    code, out, err = chorus("generate", path.stem)
    assert code == 0, err
    nodes = re.findall(r"^\s+(plan|hook|body|review|rewrite|finalize)\s+(premium|local|rules)\s", out, re.M)
    names = [name for name, _ in nodes]
    assert names[:4] == ["plan", "hook", "body", "review"] and names[-1] == "finalize", out
    assert ("hook", "premium") in nodes and ("body", "local") in nodes
    assert path.stem in out and ("accepted" in out or "rejected" in out)

    code, out, _ = chorus("posts", "--persona", path.stem)
    assert code == 0 and "1 posts" in out


def test_keys_lifecycle_and_refusals_are_one_line_errors(chorus: Run) -> None:
    code, out, err = chorus("keys", "create", "--role", "viewer", "--name", "cli-test")
    assert code == 0, err
    key = re.search(r"chorus_[0-9a-f]+_\S+", out)
    assert key is not None, out
    key_id = key.group(0).split("_")[1]
    code, out, _ = chorus("keys", "list")
    assert code == 0 and key_id in out and "cli-test" in out

    code, out, err = chorus("personas", "delete", "anything", key=key.group(0))
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "403 forbidden" in err

    assert chorus("keys", "revoke", key_id)[0] == 0
    code, _, err = chorus("personas", "list", key=key.group(0))
    assert code == 1 and "revoked" in err and len(err.strip().splitlines()) == 1

    code, _, err = chorus("generate", "no-such-persona")
    assert code == 1 and "404 persona_not_found" in err and len(err.strip().splitlines()) == 1

    code, _, err = chorus("status", url="http://127.0.0.1:9")
    assert code == 1 and "cannot reach the Chorus API" in err and len(err.strip().splitlines()) == 1


def test_engagement_report_shows_in_persona_stats(chorus: Run, tmp_path: Path) -> None:
    path = persona_file(tmp_path, unique_id("cli"))
    assert chorus("personas", "apply", str(path))[0] == 0
    report = ("--followers", "250", "--impressions", "4000", "--engagements", "100")
    code, out, err = chorus("personas", "engagement", path.stem, "--platform", "x", *report)
    assert code == 0, err
    assert "250 followers" in out and "2.50%" in out
    code, out, err = chorus("personas", "stats", path.stem)
    assert code == 0, err
    assert re.search(r"followers\W+250\b", out) and re.search(r"engagement rate\W+2\.50%", out), out
    code, out, err = chorus("personas", "schedule", path.stem)
    assert code == 0 and "autopost off" in out, err

    # A platform the persona does not post to: one line naming the field, and a non-zero exit.
    code, out, err = chorus("personas", "engagement", path.stem, "--platform", "linkedin", *report)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "platform" in err and "linkedin" in err, err


def test_up_refuses_a_serve_port_held_by_another_program_before_starting_anything(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "CHORUS_SERVE__PORT": str(port),
        # A Redis that does not answer: reaching it would mean `up` went past the port check.
        "CHORUS_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    try:
        done = subprocess.run([*CHORUS, "up"], capture_output=True, text=True, timeout=120, env=env)
    finally:
        server.shutdown()
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"port {port} on 127.0.0.1 is taken by another program" in done.stderr
    assert "CHORUS_SERVE__PORT" in done.stderr
    assert not (tmp_path / "data" / "chorus" / "services.json").exists()  # nothing was started
