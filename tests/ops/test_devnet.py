"""ops/devnet and `chorus devnet`: the local AT Protocol network starts, answers and stops clean.

The session's `devnet` fixture answers describeServer on the PDS and AppView reads; accounts are
created, log in, and an app password stops working once revoked. `chorus devnet up/status/down`
run as subprocesses with a private data dir, and `down` leaves no node, postgres or redis-server
behind. A devnet dir without node_modules fails with one line that says to run setup.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from ops.devnet import (
    DEVNET_DIR,
    DevnetError,
    DevnetInfo,
    create_account,
    create_app_password,
    login,
    revoke_app_password,
    set_password,
    start_devnet,
)
from ops.devnet.services import PG_DIR_PREFIX, alive
from tests.support.paths import REPO_ROOT

# `python -m cli` from the checkout: the same command as the `chorus` script, installed or not.
CHORUS = [sys.executable, "-m", "cli"]


def test_the_devnet_answers_on_the_urls_it_printed(devnet: DevnetInfo) -> None:
    server = httpx.get(f"{devnet.pds}/xrpc/com.atproto.server.describeServer", timeout=10).json()
    assert server["did"] == devnet.pds_did
    assert devnet.handle_domain in server["availableUserDomains"]
    assert server["inviteCodeRequired"] is False
    assert devnet.rate_limits is False
    # The AppView answers a read of its own (an unknown actor is a 400, not a connection error).
    answer = httpx.get(
        f"{devnet.appview}/xrpc/app.bsky.actor.getProfile", params={"actor": "nobody.test"}, timeout=10
    )
    assert answer.status_code == 400 and answer.json()["error"] == "InvalidRequest"
    assert httpx.get(f"{devnet.plc}/_health", timeout=10).status_code == 200
    assert devnet.appview_did.startswith("did:plc:")
    assert alive(devnet.pid, "start-devnet.mjs")


def test_an_account_is_created_logs_in_and_reaches_the_appview(devnet: DevnetInfo) -> None:
    account = create_account(devnet, "alice")
    assert account.handle.startswith("alice") and account.handle.endswith(".test")
    assert account.did.startswith("did:plc:")
    assert account.password not in repr(account)
    session = login(devnet, account.handle, account.password)
    assert (session.did, session.handle) == (account.did, account.handle)
    assert session.access_jwt not in repr(session)
    # Through the PDS with the user's token, which proxies app.bsky.* to the AppView.
    answer = httpx.get(
        f"{devnet.pds}/xrpc/com.atproto.server.getSession",
        headers={"Authorization": f"Bearer {session.access_jwt}"},
        timeout=10,
    )
    assert answer.json()["did"] == account.did
    with pytest.raises(DevnetError, match="401 AuthenticationRequired"):
        login(devnet, account.handle, "not-the-password")


def test_a_revoked_app_password_no_longer_logs_in(devnet: DevnetInfo) -> None:
    account = create_account(devnet, "bob")
    app_password = create_app_password(devnet, account, "chorus")
    assert login(devnet, account.handle, app_password).did == account.did
    revoke_app_password(devnet, account, "chorus")
    with pytest.raises(DevnetError, match="Invalid identifier or password"):
        login(devnet, account.handle, app_password)
    # The account itself is untouched, and the admin can still reset its password.
    set_password(devnet, account.did, "a-new-password-1")
    assert login(devnet, account.did, "a-new-password-1").did == account.did
    with pytest.raises(DevnetError, match="401"):
        login(devnet, account.did, account.password)


def test_the_rate_limited_devnet_sends_the_pds_limits(devnet_rate_limited: DevnetInfo) -> None:
    assert devnet_rate_limited.rate_limits is True
    account = create_account(devnet_rate_limited, "carol")
    answer = httpx.post(
        f"{devnet_rate_limited.pds}/xrpc/com.atproto.server.createSession",
        json={"identifier": account.handle, "password": account.password},
        timeout=10,
    )
    assert answer.status_code == 200
    # createSession's production limit: 30 per 5 minutes per identifier and IP.
    assert answer.headers["ratelimit-policy"] == "30;w=300"
    assert int(answer.headers["ratelimit-remaining"]) == 29


def test_bad_handle_prefixes_are_refused_before_any_call(devnet: DevnetInfo) -> None:
    for prefix in ("Alice", "a.b", "", "averyveryverylongprefix", "1abc"):
        with pytest.raises(ValueError, match="handle prefix"):
            create_account(devnet, prefix)


def test_missing_node_modules_is_one_line_that_says_to_run_setup(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(DEVNET_DIR / "start-devnet.mjs", bare)
    with pytest.raises(DevnetError) as caught:
        start_devnet(tmp_path / "run", devnet_dir=bare)
    message = str(caught.value)
    assert "\n" not in message
    assert "node_modules is missing" in message and "scripts/setup.sh" in message
    assert not (tmp_path / "run").exists(), "nothing is started when the check fails"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_node_failure_at_start_names_the_cause(tmp_path: Path) -> None:
    # A devnet dir whose node_modules is present but whose script dies at once: the error is
    # node's own first line, and Postgres and Redis are stopped again.
    # Beside it, the Postgres dir a killed devnet left: the next start sweeps it away.
    stale = Path(tempfile.mkdtemp(prefix=PG_DIR_PREFIX))
    (stale / "owner").write_text(str(_dead_pid()))
    (stale / "data").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "node_modules").symlink_to(DEVNET_DIR / "node_modules")
    (broken / "start-devnet.mjs").write_text("throw new Error('boom at start')\n")
    with pytest.raises(DevnetError, match=r"exited with status 1 at start: .*boom at start") as caught:
        start_devnet(tmp_path / "run", devnet_dir=broken)
    assert "\n" not in str(caught.value)
    # Its Postgres and Redis were shut down again (their logs say so; the logs stay, for a look).
    assert "database system is shut down" in (tmp_path / "run" / "postgres.log").read_text()
    assert "ready to exit" in (tmp_path / "run" / "redis.log").read_text()
    assert not stale.exists(), "the stale Postgres dir of a killed devnet is swept at the next start"


def test_services_die_with_a_caller_killed_outright(tmp_path: Path) -> None:
    # A test run killed with SIGKILL cannot stop its devnet: the processes must go by themselves.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from ops.devnet.services import start_services\n"
        "s = start_services(Path(sys.argv[1]), detach=False)\n"
        "print(s.pg_pid, s.redis_pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    assert caller.stdout is not None
    pg_pid, redis_pid = map(int, caller.stdout.readline().split())
    assert alive(pg_pid, "postgres") and alive(redis_pid, "redis-server")
    caller.kill()
    caller.wait(10)
    deadline = time.monotonic() + 20
    while (alive(pg_pid, "postgres") or alive(redis_pid, "redis-server")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pg_pid, "postgres"), "Postgres outlived the process that started it"
    assert not alive(redis_pid, "redis-server"), "Redis outlived the process that started it"


def _chorus(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHORUS, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def test_chorus_devnet_up_without_node_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "PATH": str(empty)}
    done = _chorus(["devnet", "up"], env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: node (Node.js) is not installed: run `bash scripts/setup.sh`"
    ], done.stderr


@pytest.mark.slow
def test_chorus_devnet_up_status_down(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "COLUMNS": "200"}
    up = _chorus(["devnet", "up", "--accounts", "2"], env)
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / "data" / "chorus" / "devnet" / "devnet.json").read_text())
    info = DevnetInfo.model_validate(state["info"])
    pids = {
        "node": (state["node_pid"], "start-devnet.mjs"),
        "postgres": (state["pg_pid"], "postgres"),
        "redis": (state["redis_pid"], "redis-server"),
    }
    try:
        assert info.pds in up.stdout and info.appview in up.stdout
        handles = state["accounts"]
        assert len(handles) == 2 and all(h in up.stdout for h in handles)
        assert "password" in up.stdout
        for pid, marker in pids.values():
            assert alive(pid, marker) and os.getsid(pid) == pid, "detached: a session of its own"
        # The accounts printed log in with the passwords printed beside them.
        line = next(line for line in up.stdout.splitlines() if handles[0] in line)
        password = line.split("password", 1)[1].split()[-1]
        assert login(info, handles[0], password).handle == handles[0]

        again = _chorus(["devnet", "up"], env)
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr

        status = _chorus(["devnet", "status"], env)
        assert status.returncode == 0, status.stderr
        assert "up" in status.stdout and info.pds in status.stdout and handles[0] in status.stdout
    finally:
        down = _chorus(["devnet", "down"], env)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    for name, (pid, marker) in pids.items():
        assert not alive(pid, marker), f"{name} (pid {pid}) is still running after `chorus devnet down`"
    assert not (tmp_path / "data" / "chorus" / "devnet").exists()

    after = _chorus(["devnet", "status"], env)
    assert after.returncode == 0 and "not running" in after.stdout
    again = _chorus(["devnet", "down"], env)
    assert again.returncode == 0 and "not running" in again.stdout
