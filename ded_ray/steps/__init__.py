"""The pipeline's steps: each runs its plan stage(s) into the run directory and returns a `StageResult`.

The steps of each part of the pipeline live in the submodules: generate (rollouts, verification),
curate (quality filters, pass rate, diversity, decontamination, mix, corpus), student (train + evaluate),
evaluate, smoke (teacher selection), ablate.
"""

from __future__ import annotations

import pandas as pd

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import DEDConfig
from ded_ray.io import read_all_problems
from ded_ray.log import log
from ded_ray.rundir import RunDir, StageResult, run_stage


def load_problems(run: RunDir, config: DEDConfig) -> StageResult:
    """Every input row of the problem sources: valid problems kept, the others rejected with their reason, so
    the stage's rows are the input's lines."""

    def build(_done: set[str]) -> pd.DataFrame:
        problems, rejected = read_all_problems(config.problems.sources)
        rejected = rejected.assign(**{S.PROBLEM_ID: [f"rejected:{i}" for i in range(len(rejected))]})
        return pd.concat([problems, rejected], ignore_index=True) if len(rejected) else problems

    return run_stage(run, plan.PROBLEMS, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)


def choose_teacher(run: RunDir, config: DEDConfig, problems: StageResult) -> str:
    """The configured teacher, or (teacher: auto) the smoke test's winner."""
    if config.teacher != "auto":
        return config.teacher
    if len(config.teachers) == 1:
        return config.teachers[0].name
    from ded_ray.steps.smoke import smoke_test

    return smoke_test(run, config, problems)["winner"]


def write_report(run: RunDir) -> str:
    from ded_ray.analysis.report import write_report as write_html

    path = write_html(run)
    log(f"[report] {path}")
    return path
