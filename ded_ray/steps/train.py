"""Training step: fine-tune the student on corpus.parquet with Ray Train; the result is `student/`."""

from __future__ import annotations

from ded_ray.config import DEDConfig
from ded_ray.errors import UserError
from ded_ray.log import log
from ded_ray.rundir import RunDir

STUDENT_DIR = "student"


def train_on_corpus(run: RunDir, config: DEDConfig, corpus_path: str) -> str:
    """Train (or reuse a finished) student; returns the student folder."""
    from ded_ray.train.trainer import train_student

    done = run.read_manifest().get("train", {})
    student = run.file(STUDENT_DIR)
    if done.get("student_dir") == student and done.get("complete"):
        log(f"[train] complete: reusing {student}")
        return student
    rows = run.read_manifest().get("corpus", {}).get("rows")
    if rows == 0:
        raise UserError(
            f"the corpus is empty: no trajectory survived curation (see the funnel in {run.file('manifest.json')}); "
            "sample more (rollout.samples_per_question), loosen curate.pass_rate.threshold, or check the teacher's prompt"
        )
    result = train_student(corpus_path, config.student.model, config.train, run.path)
    losses = [h["loss"] for h in result.history if h.get("loss") is not None]
    run.update_manifest(train={
        "student_dir": result.student_dir, "complete": True, "steps": result.total_steps,
        "samples": result.num_samples, "rejected": result.rejected,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
    })
    return result.student_dir
