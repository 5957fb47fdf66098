"""The DED pipeline as one function, in the order of the paper's Figure 2.

    problems → smoke test (pick the teacher) → M rollouts per question → quality + verification
             → student pass rate (drop easy questions) → diversity (farthest P) → mix + decontaminate
             → corpus → SFT of the student → evaluation → report

Each step is a function in `ded_ray.steps` that runs its stage(s) into the run directory, so a rerun
resumes where the last one stopped.
"""

from __future__ import annotations

from ded_ray import steps
from ded_ray.config import DEDConfig
from ded_ray.log import log
from ded_ray.ray_session import init_ray
from ded_ray.rundir import RunDir


def run_pipeline(config: DEDConfig) -> RunDir:
    init_ray(config.ray)
    run = steps.open_run(config)
    problems = steps.load_problems(run, config)
    teacher = steps.choose_teacher(run, config)
    rollouts = steps.generate_rollouts(run, config, problems, teacher)
    verified = steps.verify_rollouts(run, config, rollouts)
    hard = steps.compress_questions(run, config, verified)
    diverse = steps.select_diverse_rollouts(run, config, hard)
    corpus = steps.build_corpus(run, config, diverse)
    student = steps.train_student(run, config, corpus)
    steps.evaluate_students(run, config, student)
    steps.write_report(run, config)
    log(f"run complete: {run.uri}")
    return run
