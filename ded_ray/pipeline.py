"""The DED pipeline as one function, in the order of the paper's Figure 2.

    problems → smoke test (pick the teacher) → M rollouts per question → correctness + quality filters
             → student pass rate (drop easy questions) → diversity (farthest P) → decontaminate → mix
             → corpus → SFT of the student → evaluation before/after → report

Each step runs its stage(s) of the plan (`ded_ray.plan`) into the run directory and hands the next step the
rows it wrote, so a rerun resumes where the last one stopped. `curate_corpus` is the curation half, shared
with `ded curate`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from ded_ray import steps
from ded_ray.config import DEDConfig
from ded_ray.errors import UserError
from ded_ray.log import log
from ded_ray.ray_session import init_ray
from ded_ray.rundir import RunDir, StageResult, open_run
from ded_ray.steps import curate, generate
from ded_ray.steps.evaluate import base_scores
from ded_ray.steps.student import train_and_evaluate


def run_pipeline(config: DEDConfig) -> RunDir:
    started = time.monotonic()
    init_ray(config.ray, config.models)
    run = open_run(config)
    record_step(run, "start Ray", time.monotonic() - started)
    with timed_step(run, "problems"):
        problems = steps.load_problems(run, config)
    if config.eval.benchmarks:  # first: the smoke test ranks its students against it
        with timed_step(run, "evaluate the base student"):
            base_scores(run, config)
    with timed_step(run, "smoke test"):
        teacher = config.teacher_config(steps.choose_teacher(run, config, problems))
    with timed_step(run, "rollouts"):
        rollouts = generate.generate_rollouts(run, config, problems, [teacher])
    with timed_step(run, "verify"):
        verified = generate.verify(run, config, rollouts)
    with timed_step(run, "curate (with the student's pass-rate samples)"):
        corpus = curate_corpus(run, config, verified, problems)
    train_student(run, config, corpus)
    run.update_manifest(run_dir_bytes=run.size_bytes())  # what the run costs on storage, shown in the report
    steps.write_report(run)
    log(f"run complete: {run.uri}")
    return run


def curate_corpus(run: RunDir, config: DEDConfig, verified: StageResult, problems: StageResult) -> str:
    """From verified teacher rollouts to corpus.parquet; returns its path."""
    right = curate.quality_filters(run, config, verified)
    student_verified = generate.student_rollouts(run, config, right, problems)
    hard = curate.drop_easy_questions(run, config, right, student_verified)
    diverse = curate.keep_diverse(run, config, hard)
    clean = curate.decontaminate(run, config, diverse)
    mixed = curate.mix(run, config, clean)
    return curate.write_corpus(run, config, mixed)


def train_student(run: RunDir, config: DEDConfig, corpus: str) -> dict:
    """SFT of the student on the corpus, evaluated beside the untrained student (when benchmarks are set)."""
    if run.read_manifest().get("corpus", {}).get("rows") == 0:
        raise UserError(
            f"the corpus is empty: no trajectory survived curation (see the funnel in {run.file('manifest.json')}); "
            "sample more (rollout.samples_per_question), loosen curate.pass_rate.threshold, or check the teacher's prompt"
        )
    base = base_scores(run, config) if config.eval.benchmarks else None  # computed once, read back here
    with timed_step(run, "train + evaluate the student"):
        return train_and_evaluate(run, config, corpus, "student", base=base)


@contextmanager
def timed_step(run: RunDir, step: str):
    started = time.monotonic()
    yield
    record_step(run, step, time.monotonic() - started)


def record_step(run: RunDir, step: str, seconds: float) -> None:
    """`manifest["steps"]`: where the run's time went, in the report. The longest time a step took is kept,
    so a rerun that finds the step's work done (and takes a second) does not hide what computing it cost."""
    if seconds > run.read_manifest().get("steps", {}).get(step, 0):
        run.update_manifest(steps={step: round(seconds, 1)})
