"""A local Prometheus for a running Ray: Chorus's scrape config and alert rules, one call to start.

    proc = start_local_prometheus(9090, "/tmp/chorus-prometheus")   # None if not installed
    ...
    stop_local_prometheus(proc)

Prometheus finds Ray's metrics endpoints through the file-based service discovery that the Ray
dashboard writes (``prom_metrics_service_discovery.json``): every node's metrics agent, which
exports Ray's, Serve's and Chorus's series (``ray_chorus_*``), plus the autoscaler and the
dashboard. The config and rules come from ``cluster/prometheus/`` (``prometheus.yaml``,
``alerts.yaml``); a copy pointing at the running session goes into ``data_dir``.

    python -m ops.prometheus [--port 9090] [--data-dir DIR]   # run in the foreground
    python -m ops.prometheus --render-rule                     # the PrometheusRule manifest
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

log = logging.getLogger(__name__)

DEFAULT_PORT = 9090
DEFAULT_DATA_DIR = Path("/tmp/chorus-prometheus")
SD_FILE_NAME = "prom_metrics_service_discovery.json"
# The link Ray keeps to the latest session's discovery file (`ray start --temp-dir` moves it).
DEFAULT_SD_LINK = Path("/tmp/ray") / SD_FILE_NAME
PROMETHEUS_RULE_NAME = "chorus-alerts"

_RULE_HEADER = """\
# The alert rules of cluster/prometheus/alerts.yaml as a Prometheus Operator PrometheusRule, for
# kube-prometheus-stack (docs/deploy.md installs it as helm release `prometheus`; its default
# ruleSelector picks rules labelled `release: prometheus`). Apply it with
#   kubectl apply -n chorus -f cluster/prometheus/prometheusrule.yaml
# GENERATED from alerts.yaml (tests/cluster/test_prometheus_rules.py fails on drift):
#   python -m ops.prometheus --render-rule > cluster/prometheus/prometheusrule.yaml
"""


def _config_text(name: str) -> str:
    return resources.files("cluster.prometheus").joinpath(name).read_text(encoding="utf-8")


def alert_rules() -> dict[str, Any]:
    """Chorus's alert rules (the parsed ``cluster/prometheus/alerts.yaml``)."""
    rules: dict[str, Any] = yaml.safe_load(_config_text("alerts.yaml"))
    return rules


def ray_sd_file(ray_temp_dir: Path | str | None = None) -> Path:
    """Ray's service discovery file.

    With ``ray_temp_dir`` (a Ray started with ``--temp-dir``, as ``chorus up`` does): the link in
    it, which follows that Ray's latest session. Else the session this process is connected to,
    whose own file no other Ray on the machine overwrites. Else ``/tmp/ray``'s link.
    """
    if ray_temp_dir is not None:
        return Path(ray_temp_dir) / SD_FILE_NAME
    try:
        import ray

        if ray.is_initialized():
            node = ray._private.worker._global_node
            if node is not None:
                return Path(node.get_session_dir_path()) / SD_FILE_NAME
    except Exception:  # an older or newer Ray without these internals: fall back to the link
        log.debug("no session directory from the connected Ray", exc_info=True)
    return DEFAULT_SD_LINK


def render_config(
    sd_file: Path | str, rules_file: Path | str | None = None, scrape_interval_s: float = 10.0
) -> str:
    """``cluster/prometheus/prometheus.yaml`` pointed at ``sd_file`` (and ``rules_file``)."""
    config: dict[str, Any] = yaml.safe_load(_config_text("prometheus.yaml"))
    interval = f"{max(1, round(scrape_interval_s * 1000))}ms"
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["global"]["scrape_timeout"] = interval
    config["rule_files"] = [str(rules_file)] if rules_file is not None else []
    [ray_job] = [job for job in config["scrape_configs"] if job["job_name"] == "ray"]
    ray_job["file_sd_configs"][0]["files"] = [str(sd_file)]
    return yaml.safe_dump(config, sort_keys=False)


def render_prometheus_rule() -> str:
    """The PrometheusRule manifest (``cluster/prometheus/prometheusrule.yaml``) for alerts.yaml."""
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": PROMETHEUS_RULE_NAME,
            "labels": {"release": "prometheus", "app.kubernetes.io/part-of": "chorus"},
        },
        "spec": {"groups": alert_rules()["groups"]},
    }
    return _RULE_HEADER + yaml.dump(
        manifest, Dumper=_BlockDumper, sort_keys=False, width=4096, allow_unicode=True
    )


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str_block)


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def start_local_prometheus(
    port: int = DEFAULT_PORT,
    data_dir: Path | str = DEFAULT_DATA_DIR,
    *,
    sd_file: Path | str | None = None,
    scrape_interval_s: float = 10.0,
    host: str = "127.0.0.1",
    ready_timeout_s: float = 60.0,
    detach: bool = False,
) -> subprocess.Popen[bytes] | None:
    """Start ``prometheus`` scraping the local Ray, with Chorus's alert rules; wait until ready.

    Returns the process, or None when no ``prometheus`` binary is on PATH. ``sd_file`` defaults
    to :func:`ray_sd_file`. The config, a copy of the rules, the TSDB (``data/``), the log
    (``prometheus.log``) and the pid (``prometheus.pid``) go into ``data_dir``. ``detach`` runs it
    in its own session, so it outlives the caller (a CLI command) and its Ctrl-C; stop it later
    with ``stop_local_prometheus(data_dir)``. Raises RuntimeError if the port is taken, another
    Prometheus runs on ``data_dir`` or Prometheus exits (bad config), and TimeoutError if it is
    not ready within ``ready_timeout_s``.
    """
    sd = Path(sd_file) if sd_file is not None else ray_sd_file()
    if sd.suffix not in (".json", ".yml", ".yaml"):
        raise ValueError(f"{sd}: Prometheus reads service discovery files named *.json, *.yml or *.yaml")
    binary = prometheus_binary()
    if binary is None:
        log.warning("prometheus is not installed (Debian: apt-get install prometheus); not starting it")
        return None
    if not _port_free(host, port):
        raise RuntimeError(f"cannot start prometheus: {host}:{port} is already in use")
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    pid_file = data / "prometheus.pid"
    other = _running_pid(pid_file)
    if other is not None:
        # Two servers on one TSDB would corrupt it (and this prometheus takes no lock of its own).
        raise RuntimeError(f"cannot start prometheus: pid {other} already uses {data}")
    rules = data / "alerts.yaml"
    rules.write_text(_config_text("alerts.yaml"), encoding="utf-8")
    config = data / "prometheus.yaml"
    config.write_text(
        render_config(sd, rules, scrape_interval_s),
        encoding="utf-8",
    )
    log_path = data / "prometheus.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data / 'data'}",
                f"--web.listen-address={host}:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    pid_file.write_text(f"{proc.pid}\n", encoding="ascii")
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise RuntimeError(f"prometheus exited with {code} before it was ready: {_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                log.info("prometheus ready at %s (data in %s)", url, data)
                return proc
        if time.monotonic() > deadline:
            stop_local_prometheus(proc)
            raise TimeoutError(
                f"prometheus at {url} not ready after {ready_timeout_s:.0f}s: {_tail(log_path)}"
            )
        time.sleep(0.2)


def stop_local_prometheus(
    target: subprocess.Popen[bytes] | Path | str | None, timeout_s: float = 10.0
) -> bool:
    """Stop a Prometheus started by :func:`start_local_prometheus`: its process, or the one
    recorded in a ``data_dir`` (for a detached one). True when one was running and is stopped."""
    if target is None:
        return False
    if isinstance(target, subprocess.Popen):
        if target.poll() is not None:
            return False
        target.terminate()
        try:
            target.wait(timeout_s)
        except subprocess.TimeoutExpired:
            target.kill()
            target.wait(timeout_s)
        return True
    pid_file = Path(target) / "prometheus.pid"
    pid = _running_pid(pid_file)
    if pid is None:
        return False
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, timeout_s)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _running_pid(pid_file) == pid and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
            time.sleep(0.1)
        if _running_pid(pid_file) != pid:
            break
    pid_file.unlink(missing_ok=True)
    return True


stop = stop_local_prometheus


def _running_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` while that process is a prometheus on this data dir."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if status.split(") ", 1)[-1].startswith("Z"):  # exited, not yet reaped
        return None
    config = f"--config.file={pid_file.parent / 'prometheus.yaml'}".encode()
    return pid if config in cmdline.split(b"\0") else None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.prometheus", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--sd-file", type=Path, default=None, help=f"default: {DEFAULT_SD_LINK}")
    parser.add_argument("--scrape-interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--render-rule", action="store_true", help="print the PrometheusRule and exit")
    args = parser.parse_args(argv)
    if args.render_rule:
        sys.stdout.write(render_prometheus_rule())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    proc = start_local_prometheus(
        args.port, args.data_dir, sd_file=args.sd_file, scrape_interval_s=args.scrape_interval
    )
    if proc is None:
        return 1
    print(f"Prometheus: http://127.0.0.1:{args.port}  (Ctrl-C stops it)")
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_local_prometheus(proc)
        return 0


if __name__ == "__main__":
    sys.exit(main())
