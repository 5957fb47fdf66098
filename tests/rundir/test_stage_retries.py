"""In-job recovery: a stage that fails because Ray lost a worker is run again from its written parts (exactly
once per row); a bug, or an actor whose constructor raised, fails at once. Real process deaths on a local Ray."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import ray.cloudpickle

from ded_ray import plan
from ded_ray.ray_helpers import in_blocks, on_actors
from ded_ray.rundir import RunDir, run_stage
from ded_ray.rundir.runner import lost_worker

# The stage classes below travel to Ray's workers by value: this test module is not importable there.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 12
STAGE = plan.CORRECTNESS  # a row-wise stage: resumes by rollout_id


class DiesOnceAtTheSecondBatch:
    """The pool's actor process exits (as an OOM kill or a lost node would end it) on the first attempt's second
    batch; a marker file tells a retry's fresh actor not to. Counts its batches in `calls`."""

    def __init__(self, marker: str, calls: str):
        self.marker, self.calls = Path(marker), Path(calls)

    def __call__(self, batch):
        with self.calls.open("a") as f:
            f.write("x")
        if self.calls.stat().st_size == 2 and not self.marker.exists():
            self.marker.touch()
            os._exit(1)
        return batch


class Buggy:
    def __init__(self, calls: str):
        self.calls = Path(calls)

    def __call__(self, batch):
        with self.calls.open("a") as f:
            f.write("x")
        raise ValueError("a bug in the stage")


class BrokenConstructor:
    def __init__(self, calls: str):
        with Path(calls).open("a") as f:
            f.write("x")
        raise ValueError("a bug in the constructor")

    def __call__(self, batch):
        return batch


def _rows() -> pa.Table:
    return pa.table({"rollout_id": [f"q{i:02d}#t#0" for i in range(ROWS)], "x": list(range(ROWS))})


def _build(cls, **kwargs):
    def build(done: set[str]):
        table = _rows()
        keep = [rid not in done for rid in table["rollout_id"].to_pylist()]
        # on_actors, as every stage: Ray Data does not bring the actor back, so the stage itself fails (as
        # when a node is gone for good) and only run_stage's retry can finish it
        return on_actors(in_blocks(table.filter(pa.array(keep)), 4).map_batches, cls, 1,
                         fn_constructor_kwargs=kwargs, batch_format="pandas", batch_size=4)
    return build


def test_a_lost_actor_is_redone_from_the_written_parts(ray_local, tmp_path, capsys):
    run = RunDir(str(tmp_path), "r")
    calls = tmp_path / "calls"
    build = _build(DiesOnceAtTheSecondBatch, marker=str(tmp_path / "died"), calls=str(calls))
    result = run_stage(run, STAGE, build, part_rows=4, retries=2)
    assert (tmp_path / "died").exists(), "the actor never died: the test tested nothing"
    ids = run.stage(STAGE).read(columns=["rollout_id"])["rollout_id"].to_pylist()
    assert sorted(ids) == _rows()["rollout_id"].to_pylist() and result.rows == ROWS  # each row exactly once
    err = capsys.readouterr().err
    assert "lost ActorDiedError" in err and "(retry 1/2)" in err
    # Whatever was written before the death (the first part, if its write landed first) is not redone: the
    # retry ran only the other rows' batches, after the two batches of the first attempt.
    resumed = re.search(r"\[30 correctness\] resuming: (\d+) rows already written", err)
    written = int(resumed.group(1)) if resumed else 0
    assert written in (0, 4)
    assert calls.stat().st_size == 2 + (ROWS - written) // 4


def test_without_retries_the_lost_actor_fails_the_stage(ray_local, tmp_path):
    build = _build(DiesOnceAtTheSecondBatch, marker=str(tmp_path / "died"), calls=str(tmp_path / "calls"))
    run = RunDir(str(tmp_path), "r")
    with pytest.raises(Exception) as caught:
        run_stage(run, STAGE, build, part_rows=4, retries=0)
    assert lost_worker(caught.value) is not None
    assert not run.stage(STAGE).is_complete()


@pytest.mark.parametrize("cls", [Buggy, BrokenConstructor])
def test_a_bug_fails_at_once_without_a_retry(ray_local, tmp_path, capsys, cls):
    calls = tmp_path / "calls"
    with pytest.raises(Exception, match="a bug in the") as caught:
        run_stage(RunDir(str(tmp_path), "r"), STAGE, _build(cls, calls=str(calls)), part_rows=4, retries=3)
    assert lost_worker(caught.value) is None
    assert "retry" not in capsys.readouterr().err
    # one attempt: the constructor ran once / at most the 3 batches queued on the one actor, never again
    assert calls.stat().st_size == 1 if cls is BrokenConstructor else 1 <= calls.stat().st_size <= ROWS // 4
