"""Fault drills: kill a training worker on purpose to exercise Ray Train's recovery from checkpoints.

Pass an instance as `train_student(..., on_step=CrashOnce(marker, step=3, rank=1))`: the worker of that rank
exits hard (no cleanup, like a lost node or an OOM kill) right after that optimizer step — once: it first
creates the marker file, so the restarted worker group trains on past that step.

By default the drill first waits until Ray Train has registered every checkpoint reported so far: the
controller collects reports asynchronously, and a worker that dies a moment after `ray.train.report` can take
its last report with it (recovery then starts from the checkpoint before). Waiting makes the drill test
recovery itself, not that race.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CrashOnce:
    marker: str  # a path every worker can see; its existence means "already crashed"
    step: int  # global optimizer step after which to crash
    rank: int = 0
    wait_for_checkpoints: bool = True

    def __call__(self, rank: int, global_step: int) -> None:
        if rank != self.rank or global_step != self.step or os.path.exists(self.marker):
            return
        if self.wait_for_checkpoints:
            import ray.train

            ray.train.get_all_reported_checkpoints()
        with open(self.marker, "w") as f:
            f.write(f"crashed rank {rank} after step {global_step}\n")
        os._exit(1)
