"""The `chorus` command as a user runs it: a subprocess talking to the test API over HTTP."""

from __future__ import annotations

import asyncio
import http.server
import json
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

from chorus.models import Post
from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.keys import keys_for
from chorus.store.posts import PostRepo
from tests.support.api import assert_no_internals
from tests.support.personas import EXAMPLE_PERSONA, make_persona, unique_id
from tests.support.posts import make_post
from tests.support.processes import free_port
from tests.support.tiers import hook_only_budget

CHORUS = [shutil.which("chorus") or ""] if shutil.which("chorus") else [sys.executable, "-m", "cli"]

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

    def run(
        *args: str, key: str | None = None, url: str | None = None, columns: int | None = None
    ) -> tuple[int, str, str]:
        overrides = {"CHORUS_API_KEY": key} if key else {}
        overrides |= {"CHORUS_API_URL": url} if url else {}
        overrides |= {"COLUMNS": str(columns)} if columns else {}
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


def test_stats_show_a_dash_where_there_is_no_figure_and_money_in_significant_digits(
    chorus: Run, tmp_path: Path
) -> None:
    path = persona_file(tmp_path, unique_id("cli"), daily_budget_usd=0.0001)
    assert chorus("personas", "apply", str(path))[0] == 0
    for followers in (None, 0):  # no report yet; a report of an account without followers
        if followers is not None:
            report = ("--followers", str(followers), "--impressions", "100", "--engagements", "0")
            assert chorus("personas", "engagement", path.stem, "--platform", "x", *report)[0] == 0
        code, out, err = chorus("personas", "stats", path.stem)
        assert code == 0, err
        # Nothing to divide by is no figure, not "$0.000000".
        assert re.search(r"cost per follower\W+—", out), out
        assert re.search(r"cost per accepted post\W+—", out), out
        assert re.search(r"spend today / budget\W+\$0\.00 / \$0\.000100", out), out
        assert "$0.0000 " not in out and "$0.000000" not in out


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


# --- output a user can read, from a CLI that starts fast -------------------------------------------


def offline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`chorus ARGS...` with no API anywhere: for what the CLI does before any request."""
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "CHORUS_API_URL": "http://127.0.0.1:9",
        "COLUMNS": "80",
    }
    return subprocess.run([*CHORUS, *args], capture_output=True, text=True, timeout=120, env=env)


def test_importing_the_cli_imports_no_ray_serve_or_http_client(tmp_path: Path) -> None:
    heavy = ("ray", "ray.serve", "fastapi", "langgraph", "serve.api.app", "httpx", "openai")
    probe = f"import sys, cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert offline(tmp_path, "--help").returncode == 0


def test_messages_are_printed_as_they_are_not_read_as_markup(tmp_path: Path) -> None:
    bad = persona_file(tmp_path, "Bad_ID")
    done = offline(tmp_path, "personas", "apply", str(bad))
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "'^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$'" in done.stderr


def test_apply_says_unchanged_when_nothing_changed_and_imports_no_ray(chorus: Run, tmp_path: Path) -> None:
    path = persona_file(tmp_path, unique_id("cli"))
    assert chorus("personas", "apply", str(path)) == (0, f"created {path.stem}\n", "")
    code, out, err = chorus("personas", "apply", str(path))
    assert (code, out) == (0, f"unchanged {path.stem}\n"), err
    persona_file(tmp_path, path.stem, display_name="Renamed")
    assert chorus("personas", "apply", str(path))[:2] == (0, f"updated {path.stem}\n")

    # What made every command slow: resolving the API's URL imported Ray (seconds).
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "XDG_CONFIG_HOME": str(tmp_path / "c")}
    env.pop("CHORUS_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--key", "x", "personas", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "ray" not in imported and "ops.deploy" not in imported, done.stderr[-500:]


def test_tables_at_80_columns_keep_ids_whole_and_wrap_text(
    chorus: Run, tmp_path: Path, api_settings: Settings
) -> None:
    persona_id = unique_id("bastion-cloud-security-operations")
    path = persona_file(tmp_path, persona_id, display_name="Bastion Cloud Security Operations Team")
    assert chorus("personas", "apply", str(path))[0] == 0
    code, out, err = chorus("personas", "list", columns=80)
    assert code == 0, err
    assert persona_id in out and max(map(len, out.splitlines())) <= 80, out

    text = "Zero trust is a habit, not a product. " * 6 + "#Bastion"
    post = make_post(
        persona_id,
        text=text,
        topic="zero trust",
        cost_usd=0.00012,
        prompt_tokens=100,
        completion_tokens=50,
        tiers={"hook": "local"},
    )
    asyncio.run(_save_post(api_settings, post))
    code, out, err = chorus("posts", "--persona", persona_id, columns=80)
    assert code == 0, err
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80, out
    assert any(post.id in line and persona_id in line for line in lines), out
    shown = " ".join(line.strip() for line in lines if "Zero trust" in line or "#Bastion" in line)
    assert shown == text and len([line for line in lines if "Zero trust" in line]) > 1, out

    code, out, err = chorus("posts", "delete", post.id)
    assert (code, out) == (0, f"deleted post {post.id}\n"), err
    assert chorus("posts", "--persona", persona_id)[1].startswith("0 posts")
    code, out, err = chorus("posts", "delete", post.id)
    assert code == 1 and out == "" and "404 post_not_found" in err and len(err.strip().splitlines()) == 1


async def _save_post(settings: Settings, post: Post) -> None:
    client = async_redis(settings)
    try:
        assert await PostRepo(client, keys_for(settings)).save(post)
    finally:
        await client.aclose()


def test_status_lists_each_component_once(chorus: Run, tmp_path: Path) -> None:
    # What `chorus up` records when it starts a Redis: then status has two sources for it.
    record = tmp_path / "data" / "chorus" / "services.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"redis": {"pid": os.getpid(), "address": "127.0.0.1:6379"}}))
    code, out, err = chorus("status", columns=120)
    assert code == 0, err
    rows = [line for line in out.splitlines() if re.match(r"^\W*redis\s", line)]
    assert len(rows) == 1, out
    assert "ok" in rows[0] and "started by chorus up" in rows[0]


def test_keys_list_live_ones_purge_revoked_and_personas_restore(chorus: Run, tmp_path: Path) -> None:
    code, out, _ = chorus("keys", "create", "--role", "viewer", "--name", "purge-me")
    key = re.search(r"chorus_([0-9a-f]+)_(\S+)", out)
    assert code == 0 and key is not None, out
    key_id, secret = key.group(1), key.group(2)
    assert chorus("keys", "revoke", key_id)[0] == 0
    code, out, _ = chorus("keys", "list")
    assert code == 0 and key_id not in out
    code, out, _ = chorus("keys", "list", "--all")
    assert code == 0 and key_id in out and secret[:4] not in out
    code, out, err = chorus("keys", "purge")
    assert code == 0 and re.match(r"purged [1-9]\d* revoked key", out), err
    assert key_id not in chorus("keys", "list", "--all")[1]

    path = persona_file(tmp_path, unique_id("cli"))
    assert chorus("personas", "apply", str(path))[0] == 0
    assert chorus("personas", "delete", path.stem)[0] == 0
    assert path.stem not in chorus("personas", "list")[1]
    assert chorus("personas", "restore", path.stem) == (0, f"restored {path.stem}\n", "")
    assert path.stem in chorus("personas", "list", columns=200)[1]
    code, out, err = chorus("personas", "restore", path.stem)
    assert code == 1 and "404 persona_not_found" in err and len(err.strip().splitlines()) == 1


def test_generate_stopped_by_the_budget_prints_its_code_and_one_line_not_a_traceback(
    chorus: Run, tmp_path: Path, api_settings: Settings
) -> None:
    rules = {"required_hashtags": ["#EmberAndOak"], "no_cache_steps": ["hook", "body", "rewrite"]}
    policy = {"hook": "local", "body": "local", "rewrite": "local"}
    persona_id = unique_id("clibroke")
    budget = hook_only_budget(api_settings, make_persona(persona_id, rules=rules, model_policy=policy))
    path = persona_file(tmp_path, persona_id, rules=rules, model_policy=policy, daily_budget_usd=budget)
    assert chorus("personas", "apply", str(path))[0] == 0
    code, out, err = chorus("generate", persona_id)
    assert code != 0
    assert "budget_exceeded" in out + err and "resets at" in out + err
    assert_no_internals(out + err)
    assert len(err.strip().splitlines()) == 1, err
