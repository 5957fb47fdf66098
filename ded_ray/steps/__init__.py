"""The pipeline's steps: each runs its stage(s) into the run directory via `run_stage` and returns its output.

The steps of each part of the pipeline live in the submodules: generate (rollouts, verification),
curate (pass rate, diversity, decontamination, mix, corpus), train, evaluate, smoke (teacher selection),
ablate.
"""

from __future__ import annotations

import pyarrow as pa

from ded_ray import schema as S
from ded_ray.config import ConfigError, DEDConfig
from ded_ray.io import read_all_problems
from ded_ray.log import log
from ded_ray.manifest import run_header
from ded_ray.rundir import RunDir
from ded_ray.runner import run_stage


def open_run(config: DEDConfig) -> RunDir:
    run = RunDir(config.run.root, config.run.name)
    previous = run.read_manifest()
    header = run_header(config)
    if previous and _experiment(previous.get("config")) != _experiment(header["config"]):
        # Resuming with another config would mix outputs of two experiments in one folder.
        raise ConfigError(
            f"run directory {run.uri} was made with a different config; use another `run.name=...` "
            "or delete the folder to start over"
        )
    run.update_manifest(**header)
    return run


def _experiment(config: dict | None) -> dict | None:
    """The parts of a config that change results (where Ray runs does not)."""
    return None if config is None else {k: v for k, v in config.items() if k != "ray"}


def load_problems(run: RunDir, config: DEDConfig) -> pa.Table:
    def build(_done: set[str]) -> pa.Table:
        problems, rejected = read_all_problems(config.problems.sources)
        counts = run.write_rejected("read", rejected)
        run.update_manifest(read_rejected=counts)
        return pa.Table.from_pandas(problems, schema=S.PROBLEM_SCHEMA, preserve_index=False)

    return run_stage(run, 1, "problems", build, id_column=None, part_rows=config.run.part_rows)


def choose_teacher(run: RunDir, config: DEDConfig, problems: pa.Table) -> str:
    """The configured teacher, or (teacher: auto) the smoke test's winner."""
    if config.teacher != "auto":
        return config.teacher
    if len(config.teachers) == 1:
        return config.teachers[0].name
    from ded_ray.steps.smoke import smoke_test

    return smoke_test(run, config, problems)["winner"]


def write_report(run: RunDir, config: DEDConfig) -> str:
    from ded_ray.analysis.report import write_report as write_html

    path = write_html(run)
    log(f"[report] {path}")
    return path
