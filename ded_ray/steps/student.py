"""Train the student on a set of rows and evaluate it, resumably, beside the base score.

The one place where the main SFT, every smoke-test arm and every `ded ablate` arm turn rows into a scored
student: each trains into a run directory of its own (the run, `smoke/<teacher>/`, `ablate/<arm>/`), so a
finished training (the manifest's `train.complete`) and finished evaluations (`eval.json`) are read back on
rerun instead of recomputed.
"""

from __future__ import annotations

import pandas as pd

from ded_ray.config import DEDConfig, TrainConfig
from ded_ray.log import log
from ded_ray.rundir import RunDir
from ded_ray.steps.evaluate import evaluate_model, read_eval


def train_and_evaluate(
    run: RunDir, config: DEDConfig, corpus: str | pd.DataFrame, label: str, base: dict | None = None,
    train_config: TrainConfig | None = None,
) -> dict:
    """Train `config.student.model` on `corpus` (a corpus parquet path or DataFrame) into `run`, then score it
    on `eval.benchmarks` as `label` in `run`'s eval.json.

    Returns {"student_dir", "steps", "benchmarks": {bench: result}}, each result with `gain`: its avg@k
    minus `base`'s (the untrained student's results per benchmark), when given.
    """
    from ded_ray.train.trainer import train_student

    trained = run.read_manifest().get("train", {})
    if trained.get("complete"):
        log(f"[train] complete: reusing {trained['student_dir']}")
    else:
        result = train_student(corpus, config.student.model, train_config or config.train, run.path)
        losses = [h["loss"] for h in result.history if h.get("loss") is not None]
        trained = {
            "student_dir": result.student_dir, "complete": True, "steps": result.total_steps,
            "samples": result.num_samples, "rejected": result.rejected,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        }
        run.update_manifest(train=trained)
    scores = read_eval(run).get(label, {}).get("benchmarks")
    if scores is None:
        scores = evaluate_model(run, config, trained["student_dir"], label) if config.eval.benchmarks else {}
    base = base or {}
    for bench, score in scores.items():
        before = base.get(bench, {}).get("avg_at_k")
        after = score.get("avg_at_k")
        score["gain"] = None if before is None or after is None else after - before
    return {"student_dir": trained["student_dir"], "steps": trained["steps"], "benchmarks": scores}
