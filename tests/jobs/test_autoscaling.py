"""Autoscaling for real on one machine: Ray's fake multi-node provider adds worker "nodes" (local raylets).

The head advertises 0 CPUs, so nothing can run until the autoscaler adds a worker node: a rollout job
(jobs/rollout.py, the hf engine's actor pool with concurrency (1, 2) and 1 CPU per actor) must make it add
nodes and finish. A second job loses its worker nodes (raylets SIGKILLed) in the middle of the rollout; with
a resubmission where the job fails, every rollout must be written exactly once.

The fake provider never notices a node whose raylet died (it keeps listing it as a pending node, so the
autoscaler never replaces it and the job waits for CPUs forever), where a cloud provider reports the lost
instance and a new one is launched. The test stands in for that: after the kill it joins one replacement node
by hand (`ray start --address`), which the job may use in place, or its resubmission.

This is the `ray.cluster_utils.AutoscalingCluster` set-up done by hand: that helper runs `ray stop --force`
(which would stop every Ray on this shared machine) and reads an example config the wheel no longer ships.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from cluster_head import LOCALHOST, MARKER, REPO, LocalHead, free_ports, ray_cli, start_head

from ded_ray import plan

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

WORKER_TYPE = "cpu-worker"
ROWS = 12  # cluster-test.yaml: 6 problems x 2 samples
JOB_TIMEOUT_S = 1800

# The fake provider's cluster config (the shape of Ray's fake_multi_node/example.yaml): a head with no CPUs
# and one worker type that starts at zero. The provider gets the head's GCS address from start_head().
AUTOSCALING_CONFIG = {
    "cluster_name": "ded-fake",
    "max_workers": 2,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        WORKER_TYPE: {"resources": {"CPU": 1, "object_store_memory": 300 * 2**20}, "node_config": {},
                      "min_workers": 0, "max_workers": 2},
    },
    "head_node_type": "ray.head.default",
    "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.5, "docker": {},
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
    "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
    "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}


@pytest.fixture(scope="module")
def head():
    head = start_head(num_cpus=0, autoscaling_config=AUTOSCALING_CONFIG)
    yield head
    head.stop()


@pytest.fixture(scope="module")
def job_client(head: LocalHead):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard_url, headers=head.auth_headers())


def submit_rollout(job_client, root: Path, name: str) -> str:
    entrypoint = (f"python jobs/rollout.py --config ded_ray/configs/cluster-test.yaml "
                  f"run.root={root} run.name={name}")
    # local://: the repository is already on every node. Fake nodes share one session directory on this
    # machine, so an uploaded working_dir would be unpacked by each joining node in place (Ray unpacks with
    # overwrite), deleting the directory running drivers and actors sit in: their os.getcwd() then fails.
    # Upload is covered by test_cluster_jobs on a single node.
    return job_client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": f"local://{REPO}"})


def wait_done(job_client, job_id: str) -> str:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = str(job_client.get_job_status(job_id).value)
        if status in {"SUCCEEDED", "FAILED", "STOPPED"}:
            return status
        time.sleep(1)
    raise TimeoutError(f"job {job_id} still running after {JOB_TIMEOUT_S}s:\n{job_client.get_job_logs(job_id)[-3000:]}")


def worker_nodes(head: LocalHead) -> list[dict]:
    """Every non-head node the cluster has seen (alive or gone), from the state API."""
    result = ray_cli(head, "list", "nodes", "--address", head.dashboard_url, "--format", "json", "--limit", "100",
                     timeout=120)
    assert result.returncode == 0, result.stderr
    return [n for n in json.loads(result.stdout) if not n.get("is_head_node")]


def worker_raylets(head: LocalHead) -> list[psutil.Process]:
    """The raylet processes of the fake worker nodes (the provider starts them with RAY_NODE_TYPE_NAME)."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            env = proc.environ()
            if (env.get(MARKER) == head.marker and env.get("RAY_NODE_TYPE_NAME") == WORKER_TYPE
                    and "raylet" in " ".join(proc.info["cmdline"] or [])):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if p.name() == "raylet"] or found


def join_replacement_node(head: LocalHead) -> None:
    """A worker node like the provider's (1 CPU), joined by hand: what a cloud provider's replacement does."""
    names = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent",
             "metrics-export")
    ports = [f"--{name}-port={port}" for name, port in zip(names, free_ports(len(names)))]
    result = ray_cli(head, "start", f"--address={head.gcs_address}", f"--node-ip-address={LOCALHOST}",
                     "--num-cpus=1", f"--object-store-memory={300 * 2**20}", "--disable-usage-stats", *ports,
                     timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def rollout_ids_by_part(run: Path) -> list[list[str]]:
    return [pq.read_table(p, columns=["rollout_id"])["rollout_id"].to_pylist()
            for p in sorted((run / plan.ROLLOUT.folder).glob("part-*.parquet"))]


def test_rollout_job_makes_the_autoscaler_add_nodes(head, job_client, tmp_path):
    assert worker_nodes(head) == [], "the cluster should start with the head only"
    job_id = submit_rollout(job_client, tmp_path, "autoscale")
    status = wait_done(job_client, job_id)
    logs = job_client.get_job_logs(job_id)
    assert status == "SUCCEEDED", logs[-4000:]

    added = worker_nodes(head)
    assert len(added) >= 1, "no worker node was added"
    assert all(n.get("labels", {}).get("ray.io/node-group", WORKER_TYPE) == WORKER_TYPE for n in added)
    run = tmp_path / "autoscale"
    assert (run / plan.ROLLOUT.folder / "_SUCCESS").exists()
    ids = [rid for part in rollout_ids_by_part(run) for rid in part]
    assert len(ids) == len(set(ids)) == ROWS


def test_losing_a_worker_node_mid_rollout_loses_and_duplicates_no_row(head, job_client, tmp_path):
    """SIGKILL every worker node's raylet while the rollout stage runs: the job itself recovers.

    What Ray 2.60 does: when the node holding the engine actor dies, Ray Data surfaces the actor's
    `ActorUnavailableError`/`ActorDiedError` and the stage fails, despite the actor's restarts. `run_stage`
    sees a lost worker and runs the stage again from the parts written before the loss (`ray.stage_retries`),
    so the job succeeds without being resubmitted and every rollout is written exactly once.
    """
    run = tmp_path / "node-loss"
    job_id = submit_rollout(job_client, tmp_path, "node-loss")

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not rollout_ids_by_part(run) and time.monotonic() < deadline:
        assert str(job_client.get_job_status(job_id).value) in {"PENDING", "RUNNING"}, job_client.get_job_logs(job_id)
        time.sleep(0.3)
    raylets = worker_raylets(head)
    assert raylets, "no worker node raylet found to kill"
    for raylet in raylets:  # every worker node: the one holding the engine actor is among them
        raylet.send_signal(signal.SIGKILL)
    rows_before = sum(len(p) for p in rollout_ids_by_part(run))
    assert rows_before < ROWS, "the nodes were killed after the rollout had finished"
    join_replacement_node(head)

    status = wait_done(job_client, job_id)
    logs = job_client.get_job_logs(job_id)
    assert status == "SUCCEEDED", logs[-4000:]
    label = f"[{plan.ROLLOUT.number:02d} {plan.ROLLOUT.name}]"
    print("\n".join(line for line in logs.splitlines() if label in line))  # shown with -rP: which path it took
    if f"{label} lost " in logs:  # the stage failed and was redone in the job (else Ray Data's own retries sufficed)
        assert "rows written are kept, the rest is redone (retry 1/" in logs, logs[-3000:]
    ids = [rid for part in rollout_ids_by_part(run) for rid in part]
    assert len(ids) == len(set(ids)), "a rollout was written twice"
    assert len(ids) == ROWS, "a rollout was lost"
    stats = json.loads((run / plan.ROLLOUT.folder / "_SUCCESS").read_text())
    assert stats["rows"] == ROWS
