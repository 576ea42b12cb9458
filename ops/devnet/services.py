"""The devnet's private Postgres and Redis: throwaway, loopback only, nothing kept.

The Bluesky AppView needs both. Each devnet gets its own pair on free ports rather than sharing a
machine-wide one, so two devnets (a test session and a demo) never meet and stopping one leaves
nothing behind. Postgres refuses to run as root: as root it runs as the ``postgres`` user, with
its data in a directory of its own under the system temp dir (a pytest ``tmp_path`` is mode 700
for root, so ``postgres`` could not reach a data dir inside it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.ports import free_port, port_open


class DevnetError(RuntimeError):
    """The devnet cannot start or stop; the message is one line naming the cause and the fix."""


SETUP_HINT = "run `bash scripts/setup.sh`"
PG_DIR_PREFIX = "chorus-devnet-pg-"  # under the system temp dir, one per devnet


def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` are: on PATH, or Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found is not None and (Path(found).resolve().parent / "postgres").exists():
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
    )
    for candidate in reversed(versions):
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise DevnetError(f"PostgreSQL is not installed (no initdb/postgres found): {SETUP_HINT}")


def tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log, joined on one line (for one-line errors)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "no output"
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no output"


def alive(pid: int, marker: str | None = None) -> bool:
    """True while ``pid`` runs and is not a zombie (and its command line holds ``marker``).

    The marker guards against a recycled pid in a state file: never signal a stranger.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    if stat.rsplit(") ", 1)[-1].startswith("Z"):
        return False
    return marker is None or marker.encode() in cmdline


def stop_pid(pid: int, marker: str | None, *, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
    """Signal ``pid`` and wait until it is gone; SIGKILL after ``timeout_s``."""
    for signum, wait_s in ((sig, timeout_s), (signal.SIGKILL, 5.0)):
        if not alive(pid, marker):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + wait_s
        while alive(pid, marker) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
            time.sleep(0.05)


def tied_to_caller(detach: bool, signame: str = "TERM") -> list[str]:
    """A command prefix that signals the child when the caller dies, for an attached devnet.

    A test run killed outright (SIGKILL, a CI timeout) then leaves no node, Postgres or Redis
    behind. Only from the main thread: the kernel sends the signal when the *thread* that
    started the child ends, and a worker thread may end long before the devnet should.
    """
    if detach or threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")  # util-linux; it execs the command, so the pid stays
    return [setpriv, "--pdeathsig", signame, "--"] if setpriv else []


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that run a child as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise DevnetError(
            f"running as root, and there is no `postgres` user to run PostgreSQL as: {SETUP_HINT}"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class Services:
    """A running private Postgres + Redis. ``pg_dir`` holds Postgres's data, socket and log."""

    pg_dir: Path
    pg_port: int
    pg_pid: int
    redis_port: int
    redis_pid: int
    # Kept so that a process started here is reaped by its Popen (no "still running" warning).
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def postgres_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    @property
    def redis_host(self) -> str:
        return f"127.0.0.1:{self.redis_port}"

    def stop(self) -> None:
        # SIGINT is Postgres's "fast" shutdown: it closes the node's connections instead of
        # waiting for them (the node may already be gone without saying goodbye).
        stop_pid(self.pg_pid, "postgres", sig=signal.SIGINT)
        stop_pid(self.redis_pid, "redis-server")
        shutil.rmtree(self.pg_dir, ignore_errors=True)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)


@contextlib.contextmanager
def _timeout_is_devnet_error(what: str) -> Iterator[None]:
    try:
        yield
    except subprocess.TimeoutExpired as exc:
        raise DevnetError(f"{what} did not finish within {exc.timeout:.0f} s") from None


def _wait_for_postgres(proc: subprocess.Popen[bytes], data: Path, log: Path, deadline: float) -> None:
    # postmaster.pid's 8th line turns "ready" once connections are accepted: no client needed.
    pid_file = data / "postmaster.pid"
    while True:
        with contextlib.suppress(OSError):
            lines = pid_file.read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
        if proc.poll() is not None:
            raise DevnetError(f"PostgreSQL exited with {proc.returncode} at start: {tail(log)}")
        if time.monotonic() > deadline:
            raise DevnetError(f"PostgreSQL did not become ready in time: {tail(log)}")
        time.sleep(0.05)


def _wait_for_redis(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> None:
    while not port_open("127.0.0.1", port, timeout_s=0.5):
        if proc.poll() is not None:
            raise DevnetError(f"redis-server exited with {proc.returncode} at start: {tail(log)}")
        if time.monotonic() > deadline:
            raise DevnetError(f"redis-server did not answer on port {port} in time: {tail(log)}")
        time.sleep(0.05)


def _postmaster_pid(pg_dir: Path) -> int | None:
    try:
        return int((pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _sweep_stale_pg_dirs() -> None:
    """Remove the Postgres dirs of devnets that were killed outright (tens of MiB each).

    Stale means: the process that created it is gone, and no postmaster runs on it. A dir whose
    creator still runs (initdb under way) or whose postmaster is up (a detached devnet) stays.
    """
    for pg_dir in Path(tempfile.gettempdir()).glob(f"{PG_DIR_PREFIX}*"):
        try:
            owner = int((pg_dir / "owner").read_text())
        except (OSError, ValueError):
            continue  # not (yet) marked: leave it to whoever is making it
        postmaster = _postmaster_pid(pg_dir)
        if not alive(owner) and (postmaster is None or not alive(postmaster, "postgres")):
            shutil.rmtree(pg_dir, ignore_errors=True)


def start_services(run_dir: Path, *, detach: bool, timeout_s: float = 30.0) -> Services:
    """Start a private Postgres and Redis on free loopback ports; logs go into ``run_dir``.

    ``detach`` puts each in its own session, so it outlives the caller (`chorus devnet up`).
    """
    bin_dir = postgres_bin_dir()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise DevnetError(f"redis-server is not installed: {SETUP_HINT}")
    deadline = time.monotonic() + timeout_s
    user = _as_postgres()
    run_dir.mkdir(parents=True, exist_ok=True)
    _sweep_stale_pg_dirs()
    pg_dir = Path(tempfile.mkdtemp(prefix=PG_DIR_PREFIX))
    started: list[subprocess.Popen[bytes]] = []
    try:
        (pg_dir / "owner").write_text(str(os.getpid()))
        if user:
            os.chown(pg_dir, user["user"], user["group"])
        data = pg_dir / "data"
        pg_log = run_dir / "postgres.log"
        with pg_log.open("ab") as out, _timeout_is_devnet_error("PostgreSQL's initdb"):
            initdb = subprocess.run(
                [
                    *(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"),
                    *("-E", "UTF8", "--no-locale", "--no-sync"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=pg_dir,
                check=False,
                timeout=max(1.0, deadline - time.monotonic()),
                **user,
            )
        if initdb.returncode != 0:
            raise DevnetError(f"PostgreSQL's initdb failed ({initdb.returncode}): {tail(pg_log)}")
        pg_port = free_port()
        with pg_log.open("ab") as out:
            # No durability: the database lives as long as the devnet.
            pg = subprocess.Popen(
                [
                    *tied_to_caller(detach, "INT"),
                    *(str(bin_dir / "postgres"), "-D", str(data), "-p", str(pg_port), "-k", str(pg_dir)),
                    *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                    *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=pg_dir,
                start_new_session=detach,
                **user,
            )
        started.append(pg)
        redis_port = free_port()
        redis_log = run_dir / "redis.log"
        with redis_log.open("ab") as out:
            rd = subprocess.Popen(
                [
                    *tied_to_caller(detach),
                    *(redis_server, "--port", str(redis_port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=run_dir,
                start_new_session=detach,
            )
        started.append(rd)
        _wait_for_postgres(pg, data, pg_log, deadline)
        _wait_for_redis(rd, redis_port, redis_log, deadline)
    except BaseException:
        for proc in reversed(started):
            stop_pid(proc.pid, None, sig=signal.SIGINT if proc is started[0] else signal.SIGTERM)
        shutil.rmtree(pg_dir, ignore_errors=True)
        raise
    return Services(
        pg_dir=pg_dir, pg_port=pg_port, pg_pid=pg.pid, redis_port=redis_port, redis_pid=rd.pid, procs=started
    )
