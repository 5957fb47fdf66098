"""The DED pipeline as one function, in the order of the paper's Figure 2.

    problems → smoke test (pick the teacher) → M rollouts per question → quality + verification
             → student pass rate (drop easy questions) → diversity (farthest P) → decontaminate + mix
             → corpus → SFT of the student → evaluation before/after → report

Each step runs its stage(s) into the run directory, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

from ded_ray import steps
from ded_ray.config import DEDConfig
from ded_ray.log import log
from ded_ray.ray_session import init_ray
from ded_ray.rundir import RunDir
from ded_ray.steps import curate, evaluate, generate, train


def run_pipeline(config: DEDConfig) -> RunDir:
    init_ray(config.ray)
    run = steps.open_run(config)
    problems = steps.load_problems(run, config)
    teacher = config.teacher_config(steps.choose_teacher(run, config, problems))
    rollouts = generate.generate_rollouts(run, config, problems, [teacher])
    verified = generate.verify(run, config, rollouts)
    student_verified = generate.student_rollouts(run, config, verified)
    hard = curate.drop_easy_questions(run, config, verified, student_verified)
    diverse = curate.keep_diverse(run, config, hard)
    corpus = curate.finish_corpus(run, config, diverse)
    student = train.train_on_corpus(run, config, corpus)
    if config.eval.benchmarks:
        evaluate.evaluate_model(run, config, config.student.model, "base", slot=0)
        evaluate.evaluate_model(run, config, student, "student", slot=1)
    steps.write_report(run, config)
    log(f"run complete: {run.uri}")
    return run
