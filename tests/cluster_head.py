"""A real Ray head for the cluster tests: `ray start --head` on 127.0.0.1 with its own ports, temp dir and token.

The machine is shared, so this never touches anyone else's Ray: every port is picked free, the session lives
in a temp dir of its own, and `stop()` ends only the processes this head started — found by a marker
environment variable every Ray process of this head inherits (raylet, workers, job drivers, fake worker
nodes), never by name. `ray stop` (which stops every Ray on the machine) is never called.

Token authentication stays on, as a user's cluster would have it (Ray 2.60 enables it when a token is set):
the head and every client get `RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN` through `env()`; the HTTP job API
gets the token as a Bearer header (`auth_headers()`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
MARKER = "DED_TEST_CLUSTER"
LOCALHOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (all held open while choosing, so none is returned twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((LOCALHOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class LocalHead:
    """A running head. `dashboard_url` serves the job API; `client_address` is the `ray://` endpoint."""

    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    client_port: int
    token: str
    marker: str
    process: subprocess.Popen
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def gcs_address(self) -> str:
        return f"{LOCALHOST}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOCALHOST}:{self.dashboard_port}"

    @property
    def client_address(self) -> str:
        return f"ray://{LOCALHOST}:{self.client_port}"

    def env(self, **more: str) -> dict[str, str]:
        """Environment for a process that talks to this head (CLI, client, notebook kernel)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            DED_CACHE_DIR=os.environ.get("DED_CACHE_DIR", str(REPO / ".cache")),
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            **{MARKER: self.marker},
            **self.extra_env,
        )
        env.update(more)
        return env

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client_server_logs(self, tail_chars: int = 2000) -> str:
        """The tails of the Ray client proxy's and its per-client servers' logs (for a failed client test)."""
        logs = sorted((self.temp_dir / "session_latest" / "logs").glob("ray_client_server*.err"))
        return "\n".join(f"== {path.name}\n{_read(path)[-tail_chars:]}" for path in logs)

    def stop(self) -> None:
        stop_marked(self.marker, self.process)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_head(
    num_cpus: int = 2,
    autoscaling_config: dict | None = None,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 240.0,
    attempts: int = 3,
) -> LocalHead:
    """Start `ray start --head --block` with free ports on 127.0.0.1; returns once the head is ready.

    `autoscaling_config`: a cluster config for Ray's fake multi-node provider (the autoscaler then starts
    worker "nodes" as local processes); `extra_env` goes to the head and every process from `env()`.
    A head whose raylet dies while starting is stopped and started again, up to `attempts` times: Ray 2.60's
    raylet aborts when its dashboard agent takes over 15 s to come up, which happens on a loaded machine.
    """
    errors = []
    for _attempt in range(attempts):
        head = _launch(num_cpus, autoscaling_config, dict(extra_env or {}))
        try:
            wait_until_ready(head, timeout_s)
            return head
        except HeadStartError as exc:
            errors.append(str(exc))
            head.stop()
        except BaseException:
            head.stop()
            raise
    raise HeadStartError(f"the head did not start in {attempts} attempts:\n" + "\n---\n".join(errors))


class HeadStartError(RuntimeError):
    """The head's processes died or did not come up in time (the message carries their logs)."""


def _launch(num_cpus: int, autoscaling_config: dict | None, extra_env: dict[str, str]) -> LocalHead:
    temp_dir = Path(tempfile.mkdtemp(prefix="dedc", dir="/tmp"))  # short: Ray's unix socket paths are limited
    names = ("gcs", "dashboard", "client", "agent_http", "agent_grpc", "runtime_env", "metrics", "node_manager",
             "object_manager")
    ports = dict(zip(names, free_ports(len(names))))
    head = LocalHead(
        temp_dir=temp_dir, gcs_port=ports["gcs"], dashboard_port=ports["dashboard"], client_port=ports["client"],
        token=secrets.token_hex(32), marker=uuid.uuid4().hex, process=None,  # type: ignore[arg-type]
        log_path=temp_dir / "head.log", extra_env=extra_env,
    )
    cmd = [
        RAY, "start", "--head", "--block", "--disable-usage-stats",
        f"--port={head.gcs_port}", f"--node-ip-address={LOCALHOST}",
        "--include-dashboard=true", f"--dashboard-host={LOCALHOST}", f"--dashboard-port={head.dashboard_port}",
        f"--ray-client-server-port={head.client_port}",
        f"--dashboard-agent-listen-port={ports['agent_http']}", f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env']}", f"--metrics-export-port={ports['metrics']}",
        f"--node-manager-port={ports['node_manager']}", f"--object-manager-port={ports['object_manager']}",
        f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
    ]
    # Give slow agents more time where Ray honours it (newer raylets read this for their port-file wait).
    env = head.env(RAY_agent_register_timeout_ms="120000")
    if autoscaling_config is not None:
        config = dict(autoscaling_config)
        config["provider"] = {**config.get("provider", {}), "gcs_address": head.gcs_address}
        config_path = temp_dir / "autoscaling.json"
        config_path.write_text(json.dumps(config))
        cmd.append(f"--autoscaling-config={config_path}")
        # Ray's fake multi-node provider refuses to run without this; the update interval keeps tests short.
        env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    with open(head.log_path, "w") as log:
        head.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                        start_new_session=True)
    return head


def wait_until_ready(head: LocalHead, timeout_s: float) -> None:
    """Until the raylet has started (after its agents), the runtime-env agent listens and the job API answers."""
    logs = head.temp_dir / "session_latest" / "logs"
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        raylet_out, raylet_err = _read(logs / "raylet.out"), _read(logs / "raylet.err")
        if head.process.poll() is not None or "Check failed" in raylet_err or " C " in raylet_out:
            raise HeadStartError(f"the head's raylet died:\n{raylet_err[-2000:] or raylet_out[-2000:]}"
                                 f"\n{_read(head.log_path)[-1000:]}")
        raylet_up = "Raylet of id" in raylet_out
        agent_up = "Listening to address" in _read(logs / "runtime_env_agent.log")
        if raylet_up and agent_up:
            try:
                request = urllib.request.Request(f"{head.dashboard_url}/api/jobs/", headers=head.auth_headers())
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                last = exc
        time.sleep(1)
    raise HeadStartError(f"the head was not ready in {timeout_s}s ({last}):\n{_read(head.log_path)[-2000:]}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def marked_processes(marker: str) -> list[psutil.Process]:
    """Every process whose environment carries this head's marker (all Ray processes it started)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_marked(marker: str, head_process: subprocess.Popen | None, grace_s: float = 15.0) -> None:
    """SIGTERM `ray start --block` (it stops its node's processes), then SIGKILL whatever still carries the marker."""
    if head_process is not None and head_process.poll() is None:
        head_process.send_signal(signal.SIGTERM)
        try:
            head_process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    for attempt in range(3):
        leftovers = marked_processes(marker)
        if not leftovers:
            return
        for proc in leftovers:
            try:
                proc.send_signal(signal.SIGTERM if attempt == 0 else signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=5)
    if head_process is not None and head_process.poll() is None:
        head_process.kill()


def ray_cli(head: LocalHead, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run `ray <args>` against this head (the job commands get `--address` from RAY_API_SERVER_ADDRESS)."""
    env = head.env(RAY_API_SERVER_ADDRESS=head.dashboard_url)
    return subprocess.run([RAY, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)
