"""Starting and stopping what `chorus up` needs on one machine: Redis, a Ray head, the Serve apps.

Everything started here is recorded in ``$XDG_DATA_HOME/chorus/services.json`` (by default
``~/.local/share/chorus``), and `chorus down` stops exactly that: a Redis or Ray cluster that was
already running is used, never stopped. The Ray head runs as ``ray start --head --block`` in its
own session; stopping that one process stops its node, and no other Ray on the machine (``ray
stop`` would stop them all).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import ray
import redis
from pydantic import BaseModel
from ray import serve

from chorus.settings import Settings
from ops.deploy import API_APP, LOCAL_TIER_APP, deploy_api, deploy_local_tier, start_serve
from ops.paths import data_dir
from ops.ports import free_port, port_open

log = logging.getLogger(__name__)

Log = Callable[[str], None]

RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # where `ray start` records a local head
DASHBOARD_PORT = 8265
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServiceError(RuntimeError):
    """Something `chorus up` or `chorus down` cannot do; the message says what and why."""


class _Started(BaseModel):
    pid: int
    address: str = ""


class _Record(BaseModel):
    """What this machine's `chorus up` started, so that `chorus down` stops only that."""

    redis: _Started | None = None
    ray: _Started | None = None


def ray_temp_dir() -> Path:
    """Session files of the head `chorus up` starts. Not Ray's default /tmp/ray: a head recorded
    there is joined by every later plain `ray.init()` on the machine, the test suite's included.
    Short, because Ray's Unix sockets live under it."""
    return Path(tempfile.gettempdir()) / f"chorus-ray-{os.getuid()}"


def _record_path() -> Path:
    return data_dir() / "services.json"


def _load_record() -> _Record:
    try:
        return _Record.model_validate_json(_record_path().read_text())
    except (OSError, ValueError):
        return _Record()


def _save_record(record: _Record) -> None:
    path = _record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.model_dump_json(indent=2))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


# --- Redis ---------------------------------------------------------------------------------------


def redis_reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_for_redis(url: str, timeout_s: float, why_not: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not redis_reachable(url):
        if time.monotonic() > deadline:
            raise ServiceError(why_not)
        time.sleep(0.05)


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """A loopback redis-server on a free port with nothing persisted, stopped on exit (tests, benchmarks)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("redis-server is not installed (bash scripts/setup.sh installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url, 10, f"redis-server did not answer on port {port}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def ensure_redis(settings: Settings, say: Log) -> bool:
    """Start a loopback redis-server for the configured URL unless one answers; True if started."""
    url = settings.redis.url
    if redis_reachable(url):
        return False
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or 6379
    if parsed.scheme != "redis" or host not in LOCAL_HOSTS:
        raise ServiceError(f"Redis at {url} does not answer, and only a local one can be started here")
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("redis-server is not installed (bash scripts/setup.sh installs it)")
    home = data_dir() / "redis"
    home.mkdir(parents=True, exist_ok=True)
    pidfile = home / "redis.pid"
    say(f"starting redis-server on {host}:{port} (data in {home})")
    # Append-only file: personas, keys and posts survive `chorus down` and a reboot.
    subprocess.run(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes"),
            *("--dir", str(home), "--pidfile", str(pidfile), "--logfile", str(home / "redis.log")),
            *("--appendonly", "yes", "--save", ""),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    _wait_for_redis(url, 15, f"redis-server did not answer on port {port}; see {home / 'redis.log'}")
    record = _load_record()
    record.redis = _Started(pid=int(pidfile.read_text().strip()), address=f"{host}:{port}")
    _save_record(record)
    return True


# --- Serve's port ---------------------------------------------------------------------------------


def check_serve_port(settings: Settings) -> None:
    """Refuse to start when Serve's HTTP port is held by a program that is not a Serve proxy.

    Checked before anything starts: otherwise Serve's proxy fails to bind deep inside Ray, after
    Redis and a Ray head were already started for nothing. A port answered by a Serve proxy is
    fine (a running fleet that `chorus up` joins).
    """
    probe, port = settings.serve.client_host, settings.serve.port
    if not port_open(probe, port):
        return
    try:
        answer = httpx.get(f"{settings.serve.url}/-/healthz", timeout=3)
        if answer.status_code == 200 and answer.text.strip() == "success":
            return
    except httpx.HTTPError:
        pass
    raise ServiceError(
        f"port {port} on {probe} is taken by another program (not a Ray Serve proxy); stop it, or "
        "serve on another port with CHORUS_SERVE__PORT"
    )


# --- Ray -----------------------------------------------------------------------------------------


@dataclass
class _Target:
    address: str
    init: dict[str, Any]  # how ray.init reaches it


def running_cluster(settings: Settings) -> _Target | None:
    """The Ray cluster to join: configured, started by `chorus up`, or started on this machine."""
    if settings.ray_address:
        return _Target(settings.ray_address, {"address": settings.ray_address})
    started = _load_record().ray
    if started is not None and _alive(started.pid):
        # "auto" within our own temp dir: that finds our head, and only then does Ray send the
        # local token (~/.ray/auth_token) that `ray start` turned authentication on with.
        return _Target(started.address, {"address": "auto", "_temp_dir": str(ray_temp_dir())})
    try:
        address = RAY_ADDRESS_FILE.read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    # The file outlives its cluster: check the port first, as joining a dead one retries for long.
    if port.isdigit() and port_open(host, int(port)):
        return _Target(address, {"address": "auto"})
    return None


def _ray_binary() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise ServiceError("the `ray` command is not installed (pip install 'ray[serve]')")
    return found


def start_ray_head(say: Log, timeout_s: float = 90.0) -> str:
    """`ray start --head --block` in its own session; returns the cluster's address."""
    logs = data_dir()
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()  # not Ray's default 6379: that is Redis's port
    dashboard_port = DASHBOARD_PORT if not port_open("127.0.0.1", DASHBOARD_PORT) else free_port()
    log_path = logs / "ray-head.log"
    say(f"starting a local Ray head (logs in {log_path})")
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [
                *(_ray_binary(), "start", "--head", "--block", f"--port={port}"),
                *("--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"),
                *(
                    f"--num-cpus={os.cpu_count() or 1}",
                    "--disable-usage-stats",
                    f"--temp-dir={ray_temp_dir()}",
                ),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command; Ctrl-C here does not reach it
        )
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            _stop(proc.pid, 10)
            raise ServiceError(f"ray start failed: {lines[-1] if lines else 'no output'} (see {log_path})")
        time.sleep(0.3)
    # Ray picks the node's address itself and records it in its temp dir.
    address = (ray_temp_dir() / RAY_ADDRESS_FILE.name).read_text().strip()
    record = _load_record()
    record.ray = _Started(pid=proc.pid, address=address)
    _save_record(record)
    return address


@dataclass
class Cluster:
    address: str
    started: bool
    dashboard_url: str | None


def connect(settings: Settings, say: Log, *, start: bool) -> Cluster | None:
    """Join the running Ray cluster (starting a head first when `start`); None if there is none."""
    target = running_cluster(settings)
    started = False
    if target is None:
        if not start:
            return None
        start_ray_head(say)
        target, started = running_cluster(settings), True
        assert target is not None
    # ray.init directly rather than ops.deploy.connect_ray: the context carries the dashboard's URL.
    # ERROR: Ray's notes on joining (several clusters seen, token auth on) are not the user's concern.
    context = ray.init(
        **target.init, namespace=settings.ray_namespace, log_to_driver=False, logging_level=logging.ERROR
    )
    url = context.dashboard_url
    return Cluster(target.address, started, f"http://{url}" if url and "://" not in url else url)


def _running_apps() -> set[str]:
    try:
        apps = serve.status().applications
    except Exception:
        return set()
    return {name for name, app in apps.items() if app.status == "RUNNING"}


def deploy(settings: Settings, say: Log, *, redeploy: bool = False) -> None:
    """The local tier and the API on one Serve instance; apps already running are left alone."""
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # say() reports the steps instead
    start_serve(settings)
    running = set() if redeploy else _running_apps()
    if LOCAL_TIER_APP not in running:
        say("deploying the local model tier (the first start assembles the model)")
        deploy_local_tier(settings)
    if API_APP not in running:
        say("deploying the HTTP API")
        deploy_api(settings)


def stop_all(settings: Settings, say: Log) -> list[str]:
    """Undo `chorus up`: returns what was stopped."""
    stopped: list[str] = []
    record = _load_record()
    ours = record.ray is not None and _alive(record.ray.pid)
    if not ours:
        cluster = connect(settings, say, start=False)
        if cluster is not None:
            # A cluster we did not start stays up; only Chorus leaves it.
            serve.shutdown()
            _kill_fleet()
            ray.shutdown()
            stopped.append(f"Serve applications and the fleet on the Ray cluster at {cluster.address}")
    if record.ray is not None:
        if ours:
            say(f"stopping the Ray head at {record.ray.address}")
            _stop(record.ray.pid, 60)
            stopped.append(f"Ray head at {record.ray.address}")
        record.ray = None
        _save_record(record)
    if record.redis is not None:
        if _alive(record.redis.pid):
            say(f"stopping redis-server at {record.redis.address}")
            _stop(record.redis.pid, 30)
            stopped.append(f"redis-server at {record.redis.address}")
        record.redis = None
        _save_record(record)
    return stopped


def _kill_fleet() -> None:
    # Every named actor in the Chorus namespace (directory, persona actors and whatever else the
    # fleet runs) holds nothing that is not in Redis.
    for name in ray.util.list_named_actors():
        with contextlib.suppress(ValueError):  # gone meanwhile
            ray.kill(ray.get_actor(name), no_restart=True)


def describe() -> dict[str, str]:
    """What `chorus up` started and is still running, for `chorus status`."""
    record = _load_record()
    out = {}
    if record.ray is not None and _alive(record.ray.pid):
        out["ray"] = f"head at {record.ray.address} (pid {record.ray.pid}, started by chorus up)"
    if record.redis is not None and _alive(record.redis.pid):
        out["redis"] = f"{record.redis.address} (pid {record.redis.pid}, started by chorus up)"
    return out
