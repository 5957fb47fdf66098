"""Training progress on the driver: rank 0 posts each step's metrics to a small actor, the driver prints them.

Worker output does not reach the driver (`log_to_driver=False` keeps the console readable) and
`TorchTrainer.fit()` blocks until training ends, so without this a long SFT is minutes (on a cluster,
hours) of silence. The driver runs `fit` in a thread and, every POLL_S seconds, prints the newest step: loss,
tokens/s and the time left at the latest step's pace.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import ray

from ded_ray.log import log

POLL_S = 15.0  # how often the driver prints the newest step


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The newest step's metrics, as posted by rank 0 (fire-and-forget: training never waits on it)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None

    def post(self, metrics: dict[str, Any]) -> None:
        self.latest = metrics

    def read(self) -> dict[str, Any] | None:
        return self.latest


def step_line(metrics: dict[str, Any], total_steps: int, epochs: int) -> str:
    """'train: step 12/48 (epoch 1/2) loss 0.5123, 812 tokens/s, about 6 min left' (at this step's pace)."""
    step = int(metrics["step"])
    line = (f"train: step {step}/{total_steps} (epoch {int(metrics['epoch']) + 1}/{epochs}) "
            f"loss {metrics['loss']:.4f}, {metrics.get('tokens_per_s', 0.0):.0f} tokens/s")
    if step < total_steps and metrics.get("step_time_s"):
        left_s = metrics["step_time_s"] * (total_steps - step)
        line += f", about {left_s / 60:.0f} min left" if left_s >= 90 else f", about {left_s:.0f} s left"
    return line


def fit_with_progress(trainer, board, total_steps: int, epochs: int):
    """`trainer.fit()`, printing the newest step every POLL_S seconds while it runs; returns fit's result."""
    shown = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ded-train-fit") as pool:
        future = pool.submit(trainer.fit)
        while not wait([future], timeout=POLL_S).done:
            try:
                metrics = ray.get(board.read.remote())
            except ray.exceptions.RayError as exc:  # e.g. the board's node was lost: training goes on
                log(f"train: progress unavailable ({type(exc).__name__}); training continues")
                wait([future])
                break
            if metrics is None or metrics.get("step") == shown:
                continue
            shown = metrics["step"]
            log(step_line(metrics, total_steps, epochs))
    return future.result()
