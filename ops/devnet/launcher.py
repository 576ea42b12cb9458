"""Start and stop a local AT Protocol network: private Postgres + Redis, then `node start-devnet.mjs`.

The node script (``@atproto/dev-env``'s TestNetwork: PLC, PDS, the Bluesky AppView and Ozone in
one process) prints its URLs as one JSON line once every service answers. Its stdout and stderr
go to files in the run dir rather than pipes, so that a detached devnet (`chorus devnet up`)
outlives the command that started it and an attached one can never block on a full pipe. A
detached devnet is found again through ``devnet.json`` in its run dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ops.devnet.services import (
    SETUP_HINT,
    DevnetError,
    Services,
    alive,
    start_services,
    stop_pid,
    tail,
    tied_to_caller,
)

DEVNET_DIR = Path(__file__).resolve().parent
SCRIPT = "start-devnet.mjs"
STATE_FILE = "devnet.json"
PORT_NAMES = ("plc", "pds", "appview", "ozone")
# dev-env's usual ports, for a demo whose URLs should not change between runs.
FIXED_PORTS: Mapping[str, int] = {"plc": 2582, "pds": 2583, "appview": 2584, "ozone": 2587}


class DevnetInfo(BaseModel):
    """What start-devnet.mjs prints: the services' URLs and DIDs (camelCase on the wire)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    plc: str
    pds: str
    appview: str
    ozone: str
    pds_did: str
    appview_did: str  # for the atproto-proxy header: f"{appview_did}#bsky_appview"
    admin_password: str  # Basic auth user "admin" on the PDS's admin routes
    handle_domain: str  # handles must end in it (".test")
    rate_limits: bool
    schema_: str = Field(alias="schema")
    startup_ms: int  # node's own start, import of dev-env included
    rss_mib: int = Field(alias="rssMiB")
    pid: int
    started_in_s: float = 0.0  # the whole start as this module saw it: Postgres, Redis and node


class _State(BaseModel):
    """``devnet.json``: enough to find and stop a devnet from another process."""

    info: DevnetInfo
    node_pid: int
    pg_dir: Path
    pg_port: int
    pg_pid: int
    redis_port: int
    redis_pid: int
    accounts: list[str] = []  # handles created by `chorus devnet up` (no passwords)


class Devnet:
    """A running devnet. ``stop()`` (or leaving the ``with`` block) stops node, Postgres and
    Redis and removes the run dir; it is safe to call twice."""

    def __init__(
        self, run_dir: Path, info: DevnetInfo, services: Services, node: subprocess.Popen[bytes] | None
    ) -> None:
        self.run_dir = run_dir
        self.info = info
        self.services = services
        self._node = node
        self._stopped = False

    @property
    def node_pid(self) -> int:
        return self.info.pid

    def is_up(self) -> bool:
        return not self._stopped and alive(self.node_pid, SCRIPT)

    def save(self, accounts: list[str] | None = None) -> None:
        """Record this devnet in ``run_dir/devnet.json`` so that :func:`attach` finds it."""
        state = _State(
            info=self.info,
            node_pid=self.node_pid,
            pg_dir=self.services.pg_dir,
            pg_port=self.services.pg_port,
            pg_pid=self.services.pg_pid,
            redis_port=self.services.redis_port,
            redis_pid=self.services.redis_pid,
            accounts=accounts or [],
        )
        path = self.run_dir / STATE_FILE
        path.write_text(state.model_dump_json(indent=2, by_alias=True))

    def accounts(self) -> list[str]:
        state = _read_state(self.run_dir)
        return state.accounts if state is not None else []

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Node first: it closes its servers and drops its Postgres schemas while Postgres is up.
        stop_pid(self.node_pid, SCRIPT, timeout_s=timeout_s)
        if self._node is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._node.wait(1)
        self.services.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Devnet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def check_installed(devnet_dir: Path = DEVNET_DIR) -> str:
    """The ``node`` binary, once node and the devnet's node_modules are in place."""
    node = shutil.which("node")
    if node is None:
        raise DevnetError(f"node (Node.js) is not installed: {SETUP_HINT}")
    modules = devnet_dir / "node_modules"
    if not (modules / "@atproto" / "dev-env").is_dir():
        raise DevnetError(f"{modules} is missing or incomplete: {SETUP_HINT}")
    if not (modules / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node").exists():
        raise DevnetError(f"better-sqlite3 in {modules} is not built: {SETUP_HINT}")
    return node


def _reason(log: Path) -> str:
    """The line of node's stderr that says why it failed, not the stack trace under it."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    for line in lines:
        if line.startswith("devnet:") or "Error" in line.split(" ", 1)[0] or line.startswith("Error"):
            return line
    return " | ".join(lines[-3:]) or "no output"


def _port_env(ports: Mapping[str, int] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, port in (ports or {}).items():
        if name not in PORT_NAMES:
            raise ValueError(f"unknown devnet port {name!r}: expected one of {', '.join(PORT_NAMES)}")
        env[f"DEVNET_{name.upper()}_PORT"] = str(port)
    return env


def start_devnet(
    run_dir: Path,
    *,
    rate_limits: bool = False,
    ports: Mapping[str, int] | None = None,
    timeout_s: float = 60.0,
    detach: bool = False,
    devnet_dir: Path = DEVNET_DIR,
) -> Devnet:
    """Start a devnet whose logs and scratch files live in ``run_dir`` (removed by ``stop()``).

    ``rate_limits`` turns on the PDS's production rate limits (off in dev-env). ``ports`` fixes
    some of the ``plc``/``pds``/``appview``/``ozone`` ports (unset: free ones). ``detach`` starts
    every process in its own session and records it in ``run_dir/devnet.json``, for a devnet
    that outlives the caller (find it again with :func:`attach`); an attached one started from
    the main thread is signalled to stop if the caller dies without stopping it. Raises DevnetError, one line
    naming the cause: node or node_modules missing, PostgreSQL missing, a startup timeout, or
    what node said when it failed.
    """
    t0 = time.monotonic()
    node = check_installed(devnet_dir)
    env = {**os.environ, **_port_env(ports)}
    run_dir.mkdir(parents=True, exist_ok=True)
    scratch = run_dir / "tmp"
    scratch.mkdir(exist_ok=True)
    services = start_services(run_dir, detach=detach, timeout_s=min(timeout_s, 30.0))
    out_path, err_path = run_dir / "devnet.out", run_dir / "devnet.log"
    env.update(
        DB_POSTGRES_URL=services.postgres_url,
        REDIS_HOST=services.redis_host,
        DEVNET_RATE_LIMITS="1" if rate_limits else "0",
        TMPDIR=str(scratch),  # dev-env's SQLite files and blobs
    )
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [*tied_to_caller(detach), node, str(devnet_dir / SCRIPT)],
                cwd=devnet_dir,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
            )
    except BaseException:
        services.stop()
        raise
    try:
        info = _wait_for_info(proc, out_path, err_path, t0 + timeout_s, timeout_s)
    except BaseException:
        stop_pid(proc.pid, None)
        proc.wait(5)
        services.stop()
        raise
    devnet = Devnet(run_dir, info.model_copy(update={"started_in_s": time.monotonic() - t0}), services, proc)
    if detach:
        devnet.save()
    return devnet


def _wait_for_info(
    proc: subprocess.Popen[bytes], out_path: Path, err_path: Path, deadline: float, timeout_s: float
) -> DevnetInfo:
    while True:
        text = out_path.read_text(errors="replace")
        if "\n" in text:
            line = text.split("\n", 1)[0]
            try:
                return DevnetInfo.model_validate_json(line)
            except ValidationError as exc:
                raise DevnetError(f"the devnet printed an unexpected first line: {line[:200]!r}") from exc
        code = proc.poll()
        if code is not None:
            raise DevnetError(f"the devnet exited with status {code} at start: {_reason(err_path)}")
        if time.monotonic() > deadline:
            raise DevnetError(
                f"the devnet did not start within {timeout_s:.0f} s (see {err_path}): {tail(err_path)}"
            )
        time.sleep(0.05)


def _read_state(run_dir: Path) -> _State | None:
    try:
        return _State.model_validate_json((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def attach(run_dir: Path) -> Devnet | None:
    """The devnet recorded in ``run_dir`` (by a detached start), whether or not it still runs;
    None when nothing is recorded there. ``stop()`` on it stops what is left of it."""
    state = _read_state(run_dir)
    if state is None:
        return None
    services = Services(
        pg_dir=state.pg_dir,
        pg_port=state.pg_port,
        pg_pid=state.pg_pid,
        redis_port=state.redis_port,
        redis_pid=state.redis_pid,
    )
    return Devnet(run_dir, state.info, services, None)


def describe(info: DevnetInfo) -> dict[str, str]:
    """The URLs and DIDs to show a person, in a stable order."""
    return {
        "PLC": info.plc,
        "PDS": info.pds,
        "AppView": info.appview,
        "Ozone": info.ozone,
        "PDS DID": info.pds_did,
        "AppView DID": info.appview_did,
        "rate limits": "on" if info.rate_limits else "off",
    }
