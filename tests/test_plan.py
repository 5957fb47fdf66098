"""The pipeline plan: its invariants, and that the stage sequence is written nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ded_ray import plan

REPO = Path(__file__).resolve().parents[1]


def test_numbers_names_and_levels_are_consistent():
    numbers = [s.number for s in plan.PIPELINE]
    assert numbers == sorted(set(numbers)) and len({s.name for s in plan.PIPELINE}) == len(plan.PIPELINE)
    assert plan.LEVELS == ("all", "right", "right-hard", "right-hard-diverse", "corpus")  # the paper's Table 3 + ours
    closing = [plan.level_stage(level) for level in plan.LEVELS]
    assert [plan.CURATION.index(s) for s in closing] == sorted(plan.CURATION.index(s) for s in closing)
    assert plan.level_stage("corpus") is plan.FINAL
    # "right" is whatever the last quality check keeps: the last filter, right before the student's rollouts
    assert plan.level_stage("right") is plan.QUALITY_FILTERS[-1]
    assert plan.PIPELINE.index(plan.QUALITY_FILTERS[-1]) + 1 == plan.PIPELINE.index(plan.STUDENT_ROLLOUT)
    with pytest.raises(KeyError, match="the levels are"):
        plan.level_stage("right-easy")


def test_every_declared_reason_maps_back_to_its_stage():
    for stage in plan.CURATION:
        for reason in stage.reasons:
            if "*" not in reason and not any(reason in s.reasons for s in plan.CURATION[:plan.CURATION.index(stage)]):
                assert plan.reason_stage(reason) == stage.name, reason
    assert plan.reason_stage("http_429") == plan.ROLLOUT.name  # engine error slugs are patterns
    assert plan.reason_stage("no-such-reason") == "other"


def test_filters_are_row_wise_and_resumable_by_rollout_id():
    for stage in plan.QUALITY_FILTERS:
        assert not stage.grouped and stage.resume_column == "rollout_id" and stage.runs is not None
        assert hasattr(stage.runs, "from_config") and stage.config.startswith("curate.")
    assert plan.DIVERSITY.resume_column is None  # grouped: redone whole


def test_no_stage_number_or_folder_outside_the_plan():
    """The sequence lives in plan.py: no other file names a stage folder (`35_repetition`) or calls
    `run.stage(<number>, ...)` / `run_stage(run, <number>, ...)`."""
    names = "|".join(re.escape(s.name) for s in (*plan.PIPELINE, plan.SAMPLE, plan.SAMPLE_VERIFY))
    folder = re.compile(rf"\b\d{{2}}_({names})\b")
    numbered_call = re.compile(r"\b(run_stage\(\s*\w+\s*,|\.stage\()\s*\d")
    offenders = []
    for path in [*(REPO / "ded_ray").rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "jobs").glob("*.py"),
                 *(REPO / "notebooks").glob("*.ipynb")]:
        if path.name == "plan.py" and path.parent.name == "ded_ray" or path == Path(__file__).resolve():
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in folder.finditer(text)]
        offenders += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in numbered_call.finditer(text)]
    assert offenders == []
