"""Jobs on a real local head: `ray job submit` (CLI and SDK), `ray job stop` + resubmit resumes, `ray://` clients.

One head (conftest.py) serves this module and the notebook's. The
pipeline runs ded_ray/configs/cluster-test.yaml: the built-in SmolLM2 on 6 generated sums, exactly what
a user would submit to check a fresh cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cluster_head import REPO, LocalHead, ray_cli

from ded_ray import plan

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

CONFIG = "ded_ray/configs/cluster-test.yaml"
JOB_TIMEOUT_S = 1800  # the whole pipeline: 7-15 min measured on this shared 2-core machine at load average 20-30
STAGES = [stage.folder for stage in plan.PIPELINE]
ROW_WISE_STAGES = {stage.folder for stage in plan.PIPELINE if not stage.grouped}  # resume by rollout_id
ROLLOUT = plan.ROLLOUT.folder


@pytest.fixture(scope="module")
def job_client(head: LocalHead):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard_url, headers=head.auth_headers())


def submit_cli(head: LocalHead, *job_args: str, wait: bool = True, job_id: str | None = None,
               ) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir . -- python <job_args>`, as the README tells users to."""
    flags = ([] if wait else ["--no-wait"]) + ([f"--submission-id={job_id}"] if job_id else [])
    return ray_cli(head, "job", "submit", *flags, "--working-dir", ".", "--", "python", *job_args,
                   timeout=JOB_TIMEOUT_S)


def wait_for_status(client, job_id: str, statuses: set[str], timeout_s: float = JOB_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id).value)
        if status in statuses:
            return status
        time.sleep(1)
    raise TimeoutError(f"job {job_id} not in {statuses} after {timeout_s}s; logs:\n{client.get_job_logs(job_id)[-3000:]}")


def assert_run_complete(run: Path) -> None:
    for stage in STAGES:
        assert (run / stage / "_SUCCESS").exists(), f"{stage} not complete in {run}"
    assert (run / "corpus.parquet").exists()
    assert (run / "student" / "config.json").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["corpus"]["rows"] == pq.read_metadata(run / "corpus.parquet").num_rows > 0
    assert manifest["train"]["complete"] is True


def rollout_parts(run: Path) -> dict[str, list[str]]:
    """{part file name: rollout_ids in it} of the rollout stage."""
    return {p.name: pq.read_table(p, columns=["rollout_id"])["rollout_id"].to_pylist()
            for p in sorted((run / ROLLOUT).glob("part-*.parquet"))}


def corpus_rows(run: Path) -> pd.DataFrame:
    corpus = pq.read_table(run / "corpus.parquet").to_pandas()
    corpus["messages"] = corpus["messages"].map(lambda ms: json.dumps([dict(m) for m in ms], sort_keys=True))
    return corpus.sort_values("rollout_id").reset_index(drop=True)


# --- `ray job submit` --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(head: LocalHead, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("cli-runs")
    result = submit_cli(head, "jobs/run_pipeline.py", "--config", CONFIG, f"run.root={root}")
    return result, root / "cluster-test"


def test_ray_job_submit_runs_the_pipeline(cli_run):
    result, run = cli_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "succeeded" in (result.stdout + result.stderr).lower()
    assert f"run directory {run}" in result.stdout + result.stderr  # the job logs where its outputs are
    assert_run_complete(run)


def test_failing_job_exits_non_zero(head: LocalHead, job_client):
    job_id = f"ded-failing-{uuid.uuid4().hex[:8]}"
    result = submit_cli(head, "jobs/run_pipeline.py", "--config", "no-such-config.yaml", job_id=job_id)
    assert result.returncode != 0
    assert str(job_client.get_job_status(job_id).value) == "FAILED"
    assert "no-such-config.yaml" in job_client.get_job_logs(job_id)


# --- stop midway, resubmit (SDK), file:// storage -------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed_run(head: LocalHead, job_client, tmp_path_factory) -> dict:
    """A pipeline job stopped with `ray job stop` right after its rollout stage finished (so in the middle of
    verification, the next stage), then submitted again through `JobSubmissionClient` with the same
    command; the run root is a file:// URI.

    Why there: each stage's rows reach the driver in one burst at this size (one input block), so "half a
    stage written" cannot be hit reliably by timing; a finished rollout followed by a stage in flight can.
    """
    root = tmp_path_factory.mktemp("resume-runs")
    run = root / "cluster-test"
    entrypoint = ["jobs/run_pipeline.py", "--config", CONFIG, f"run.root=file://{root}"]
    first_id = f"ded-stopped-{uuid.uuid4().hex[:8]}"
    submitted = submit_cli(head, *entrypoint, wait=False, job_id=first_id)
    assert submitted.returncode == 0, submitted.stderr

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (run / ROLLOUT / "_SUCCESS").exists() and time.monotonic() < deadline:
        assert str(job_client.get_job_status(first_id).value) in {"PENDING", "RUNNING"}, job_client.get_job_logs(first_id)
        time.sleep(0.2)
    stopped = ray_cli(head, "job", "stop", first_id)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_for_status(job_client, first_id, {"STOPPED", "FAILED", "SUCCEEDED"}) == "STOPPED"
    before = stage_snapshot(run)
    corpus_before = (run / "corpus.parquet").exists()

    second_id = job_client.submit_job(entrypoint=" ".join(["python", *entrypoint]), runtime_env={"working_dir": str(REPO)})
    status = wait_for_status(job_client, second_id, {"SUCCEEDED", "FAILED", "STOPPED"})
    return {"run": run, "root": root, "before": before, "corpus_before": corpus_before,
            "status": status, "logs": job_client.get_job_logs(second_id)}


def stage_snapshot(run: Path) -> dict[str, dict]:
    """{stage folder: {complete, success_mtime, parts}} of every stage folder in the run directory."""
    snapshot = {}
    for folder in sorted(run.glob("[0-9][0-9]_*")):
        success = folder / "_SUCCESS"
        snapshot[folder.name] = {
            "complete": success.exists(),
            "success_mtime": success.stat().st_mtime_ns if success.exists() else None,
            "parts": sorted(p.name for p in folder.glob("part-*.parquet")),
        }
    return snapshot


def test_job_submission_client_writes_to_a_file_uri(resumed_run):
    assert resumed_run["status"] == "SUCCEEDED", resumed_run["logs"][-4000:]
    assert f"run directory file://{resumed_run['root']}/cluster-test" in resumed_run["logs"]
    assert_run_complete(resumed_run["run"])


def test_stopped_job_resumes_without_redoing_finished_work(resumed_run):
    assert resumed_run["status"] == "SUCCEEDED", resumed_run["logs"][-4000:]
    before, after = resumed_run["before"], stage_snapshot(resumed_run["run"])
    finished = [name for name, stage in before.items() if stage["complete"]]
    assert plan.PROBLEMS.folder in finished and ROLLOUT in finished
    assert not resumed_run["corpus_before"] and set(finished) != set(STAGES), "the job was not stopped midway"
    for name in finished:  # reused as they were: same _SUCCESS (not rewritten), same part files
        assert after[name] == before[name], f"finished stage {name} was redone"
        index, stage = name.split("_", 1)
        assert f"[{index} {stage}] complete: reusing" in resumed_run["logs"]
    for name, stage in before.items():  # a row-wise stage cut off midway keeps its written parts
        if not stage["complete"] and name in ROW_WISE_STAGES:
            assert set(stage["parts"]) <= set(after[name]["parts"]), f"{name} lost parts written before the stop"
    # Every rollout exactly once; the resumed job generated none of them again.
    all_ids = [rid for ids in rollout_parts(resumed_run["run"]).values() for rid in ids]
    assert len(all_ids) == len(set(all_ids)) == 12  # 6 problems x 2 samples
    assert f"[{plan.ROLLOUT.number:02d} {plan.ROLLOUT.name}] complete: reusing 12 rows" in resumed_run["logs"]


def test_resumed_corpus_equals_an_uninterrupted_run(resumed_run, cli_run):
    _result, reference = cli_run
    assert resumed_run["status"] == "SUCCEEDED", resumed_run["logs"][-4000:]
    resumed, uninterrupted = corpus_rows(resumed_run["run"]), corpus_rows(reference)
    assert list(resumed["rollout_id"]) == list(uninterrupted["rollout_id"])
    pd.testing.assert_frame_equal(resumed, uninterrupted)


# --- Ray client ------------------------------------------------------------------------------------------------


def test_ray_client_session_runs_a_stage(head: LocalHead):
    """`ray.init("ray://...")` through ded_ray's own session code, then the verify stage on the cluster.

    Ray Data's streaming executor cannot run in a Ray client driver (Ray 2.60: the client worker has no
    core worker), so the client sends the stage's Dataset pipeline to the cluster as a task — the pattern
    the notebook uses — and gets back only the verdicts.
    """
    script = textwrap.dedent(f"""
        import pandas as pd, ray
        from ded_ray.config import RayConfig, VerifyConfig
        from ded_ray.ray_session import init_ray

        init_ray(RayConfig(address="{head.client_address}"))
        assert ray.util.client.ray.is_connected()

        @ray.remote(num_cpus=0)
        def verify_on_cluster(rows):
            import ray.data
            from ded_ray.ray_helpers import actor_pool
            from ded_ray.stages.verify import VerifyStage
            return ray.data.from_pandas(rows).map_batches(
                VerifyStage, fn_constructor_kwargs={{"config": VerifyConfig(), "tokenizer": "smollm2-135m"}},
                batch_format="pandas", compute=actor_pool(1)).to_pandas()

        rows = pd.DataFrame({{
            "rollout_id": ["a#t#0", "b#t#0", "c#t#0"], "domain": ["math"] * 3,
            "question": ["What is 2 + 2?", "What is 3 * 3?", "What is 1 + 5?"],
            "answer": ["4", "9", "6"], "tests": [None] * 3,
            "response": ["So \\\\boxed{{4}}", "It is \\\\boxed{{8}}", "no idea"],
        }})
        out = ray.get(verify_on_cluster.remote(rows))
        print("VERDICTS", dict(zip(out["rollout_id"], out["verdict"])))
    """)
    result = subprocess.run([sys.executable, "-c", script], env=head.env(), cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    verdicts = eval(result.stdout.split("VERDICTS", 1)[1].splitlines()[0])
    assert verdicts["a#t#0"] == "correct"
    assert verdicts["b#t#0"] == "wrong"
    assert verdicts["c#t#0"] in {"unparsable", "wrong"}


def test_ray_client_gives_up_on_a_session_that_never_starts(head: LocalHead):
    """A client session whose server cannot start (its interpreter is /bin/false) is tried `attempts` times,
    then fails with the address and where the logs are; a plain connection right after still works."""
    script = textwrap.dedent(f"""
        import ray
        from ded_ray.ray_session import connect_client

        try:
            connect_client("{head.client_address}", attempts=2, runtime_env={{"py_executable": "/bin/false"}})
        except ConnectionAbortedError as exc:
            print("GAVE UP", exc)
        connect_client("{head.client_address}")
        print("CONNECTED", ray.get(ray.remote(lambda: 41 + 1).remote()))
    """)
    result = subprocess.run([sys.executable, "-c", script], env=head.env(), cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"GAVE UP the Ray client server at {head.client_address} failed to start a session 2 times" in result.stdout
    assert "ray_client_server_" in result.stdout
    assert result.stderr.count("trying again (2/2)") == 1
    assert "CONNECTED 42" in result.stdout
