"""`ded ablate`'s arms (PAPER.md Table 3) from a run directory written by the real runner, and its table."""

from __future__ import annotations

from pathlib import Path

import pytest
from curated_run import SIZES, write_curated_run

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.analysis.run_data import funnel
from ded_ray.rundir import SUCCESS, RunDir
from ded_ray.config import load_config
from ded_ray.steps.ablate import ARMS, RANDOM, ablate, ablation_table, arm_rows, identical_arm


def test_arms_follow_the_curation_funnel(tmp_path):
    arms = arm_rows(write_curated_run(str(tmp_path)))
    assert tuple(arms) == ARMS
    ids = {arm: set(rows[S.ROLLOUT_ID]) for arm, rows in arms.items()}
    assert {arm: len(i) for arm, i in ids.items()} == {**SIZES, RANDOM: SIZES["corpus"]}
    # each curation step keeps a subset of the one before
    assert ids["right-hard-diverse"] < ids["right-hard"] < ids["right"] < ids["all"]
    assert not any(i.endswith("#3") for i in ids["right"])  # the wrong samples
    assert not any(i.startswith("q0#") for i in ids["right-hard"])  # the question the student solves
    # the control: as many rows as the corpus, from the right ones, without duplicates
    assert ids[RANDOM] <= ids["right"] and len(arms[RANDOM]) == SIZES["corpus"]


def test_every_arm_is_decontaminated_like_the_corpus(tmp_path):
    """An evaluation question among the training rows leaves every arm, the early levels and the control
    included, under the decontamination stage's rule (exact operators for short questions)."""
    import pandas as pd

    from ded_ray.stages.decontaminate import EvalIndex

    run = write_curated_run(str(tmp_path))
    index = EvalIndex(pd.DataFrame({S.PROBLEM_ID: ["e1"], S.QUESTION: ["what is 1+2 ?"]}))  # = q1's sample 2
    clean = arm_rows(run, eval_index=index)
    for arm, rows in arm_rows(run).items():
        if arm != RANDOM:  # the control is drawn again from the smaller pool
            assert set(rows[S.ROLLOUT_ID]) - set(clean[arm][S.ROLLOUT_ID]) == {"q1#t#2"} & set(rows[S.ROLLOUT_ID]), arm
    assert set(clean[RANDOM][S.ROLLOUT_ID]) <= set(clean["right"][S.ROLLOUT_ID]) - {"q1#t#2"}
    assert len(clean["all"]) == SIZES["all"] - 1 and len(clean["right-hard"]) == SIZES["right-hard"] - 1


def test_each_table3_label_names_one_row_set_in_the_funnel_and_the_arms(tmp_path):
    run = write_curated_run(str(tmp_path))
    arms = arm_rows(run)
    for row in funnel(run).table3:
        assert row["rows"] == len(arms[row["level"]]), row["level"]
        assert row["questions"] == arms[row["level"]][S.PROBLEM_ID].nunique(), row["level"]


def test_an_arm_with_an_earlier_arms_rows_is_not_trained_again(tmp_path):
    arms = arm_rows(write_curated_run(str(tmp_path)))
    # the fixture's decontamination and mixing drop nothing: the corpus arm is right-hard-diverse's twin
    assert [identical_arm(arm, arms) for arm in ARMS] == [None] * 4 + ["right-hard-diverse", None]
    # the student solved no question: right-hard has exactly the right rows (in any order)
    arms["right-hard"] = arms["right"].iloc[::-1]
    assert identical_arm("right-hard", arms) == "right"
    assert identical_arm("right-hard-diverse", arms) is None


def test_random_control_is_seeded(tmp_path):
    run = write_curated_run(str(tmp_path))
    draw = {seed: set(arm_rows(run, seed=seed)[RANDOM][S.ROLLOUT_ID]) for seed in (0, 0, 1, 2, 3)}
    assert set(arm_rows(run, seed=0)[RANDOM][S.ROLLOUT_ID]) == draw[0]
    assert len({frozenset(d) for d in draw.values()}) > 1  # 924 possible draws of 6 of 12: seeds differ


def test_an_unfinished_run_is_refused_with_the_missing_stage(tmp_path):
    with pytest.raises(ValueError, match="is not complete .run `ded run` first"):
        arm_rows(RunDir(str(tmp_path), "never-run"))
    run = write_curated_run(str(tmp_path))
    Path(run.stage(plan.DIVERSITY).path, SUCCESS).unlink()  # cut off during diversity selection
    with pytest.raises(ValueError, match=f"{plan.DIVERSITY.folder} is not complete"):
        arm_rows(run)


def test_an_unknown_arm_is_refused_with_the_choices_before_any_work(tmp_path):
    assert ARMS == (*plan.LEVELS, RANDOM)
    with pytest.raises(ValueError, match="unknown ablation arm.s. diverse: choose from all, right, "):
        ablate(RunDir(str(tmp_path), "never-run"), load_config(), only=["corpus", "diverse"])


def test_table_has_the_base_and_every_arm():
    score = {"questions": 20, "k": 2, "avg_at_k": 0.5, "stderr": 0.1}
    summary = {"base": {"arith": {**score, "avg_at_k": 0.15}},
               "arms": {arm: {"rows": 10 + i, "benchmarks": {"arith": score}} for i, arm in enumerate(ARMS)}}
    table = ablation_table(summary).splitlines()
    assert table[2].startswith("| base, untrained / arith | 20 | 2 | 15.0% | 10.0 |")
    assert [line.split(" / ")[0] for line in table[3:]] == [f"| {arm} ({10 + i} rows)" for i, arm in enumerate(ARMS)]
    summary["arms"]["right-hard"] = {**summary["arms"]["right"], "same_as": "right"}
    assert "| right-hard (11 rows, = right) / arith |" in ablation_table(summary)
