"""`ded ablate`'s arms (PAPER.md Table 3) from a run directory written by the real runner, and its table."""

from __future__ import annotations

from pathlib import Path

import pytest
from curated_run import SIZES, trajectories, write_curated_run

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.analysis.run_data import funnel
from ded_ray.rundir import SUCCESS, RunDir
from ded_ray.config import load_config
from ded_ray.config import DiversityConfig
from ded_ray.steps.ablate import (ARMS, ONE_PER_QUESTION, OPTION_ARMS, RANDOM, ablate, ablation_table,
                                   _combine, arm_rows, identical_arm, select_again, selection_record)


POOL_IDS = {f"q{q}#t#{k}" for q in (1, 2, 3) for k in range(3)}  # right-hard: the verified rows of q1..q3


def test_arms_are_the_papers_table3_rows(tmp_path):
    arms = arm_rows(write_curated_run(str(tmp_path)))
    assert tuple(arms) == ARMS
    ids = {arm: set(rows[S.ROLLOUT_ID]) for arm, rows in arms.items()}
    assert len(ids["all"]) == SIZES["all"] and ids["right-hard-diverse"] == ids["corpus"]
    # +Right and +Right-Hard: one trajectory per question, the first verified one in sample order
    assert ids["right"] == {"q0#t#0", "q1#t#0", "q2#t#0", "q3#t#0"}
    assert ids["right-hard"] == ids["right"] - {"q0#t#0"}  # q0 the student solves
    # +Right-Hard-Diverse: the diversity stage's P per question (the fixture drops sample 2)
    assert ids["right-hard-diverse"] == POOL_IDS - {"q1#t#2", "q2#t#2", "q3#t#2"}
    # the control: the diverse arm's size, from the pool diversity chose from, no duplicates
    assert ids[RANDOM] <= POOL_IDS and len(arms[RANDOM]) == SIZES["right-hard-diverse"]
    # each option arm: P = 2 per question chosen again from the same pool
    for arm in OPTION_ARMS:
        assert ids[arm] <= POOL_IDS and arms[arm][S.PROBLEM_ID].value_counts().to_dict() == {"q1": 2, "q2": 2, "q3": 2}


def test_option_arms_select_again_with_their_option_on():
    """Each option arm is the diversity stage's choice with that option on; the picks and min distances
    are recorded. Two of q1's pool answers differ only by the boxed sentence: the reasoning comparison sees
    them as one, the plain comparison does not."""
    rows = trajectories()
    rows = rows[rows[S.ROLLOUT_ID].isin(POOL_IDS)].reset_index(drop=True)
    pool = rows.assign(**{S.RESPONSE: ["1 + 1 = 2. The answer is \\boxed{2}.", "1 + 1 = 2. So \\boxed{2}.",
                                       "Add one to one: 2. \\boxed{2}.", *rows[S.RESPONSE][3:]]})
    cfg = DiversityConfig(unit="char", per_question=2)
    plain = select_again(pool, cfg)
    reasoning = select_again(pool, cfg.model_copy(update=OPTION_ARMS["diverse-reasoning"]))
    assert len(plain) == len(reasoning) == 6
    record = selection_record(reasoning)
    assert sorted(record["picks"]) == ["q1", "q2", "q3"] and all(len(v) == 2 for v in record["picks"].values())
    assert record["mean_min_distance"] > 0
    # with the boxed sentence dropped, the first two of q1 are identical: one of them is never picked
    assert len({"q1#t#0", "q1#t#1"} & set(record["picks"]["q1"])) == 1
    deduped = select_again(pool, cfg.model_copy(update={"compare": "reasoning", **OPTION_ARMS["diverse-dedupe"]}))
    assert len(deduped[deduped[S.PROBLEM_ID] == "q1"]) == 2 and "q1#t#2" in set(deduped[S.ROLLOUT_ID])


def test_every_arm_is_decontaminated_like_the_corpus(tmp_path):
    """An evaluation question among the training rows leaves every arm, the early levels, the option arms
    and the control included, under the decontamination stage's rule (exact operators for short questions)."""
    import pandas as pd

    from ded_ray.stages.decontaminate import EvalIndex

    run = write_curated_run(str(tmp_path))
    index = EvalIndex(pd.DataFrame({S.PROBLEM_ID: ["e1"], S.QUESTION: ["what is 1+2 ?"]}))  # = q1's sample 2
    clean = arm_rows(run, eval_index=index)
    for arm, rows in clean.items():
        assert "q1#t#2" not in set(rows[S.ROLLOUT_ID]), arm
    assert set(clean["all"][S.ROLLOUT_ID]) == set(arm_rows(run)["all"][S.ROLLOUT_ID]) - {"q1#t#2"}
    assert set(clean[RANDOM][S.ROLLOUT_ID]) <= POOL_IDS - {"q1#t#2"}


def test_each_table3_label_names_the_questions_of_its_funnel_row(tmp_path):
    """The funnel counts every trajectory at a level; the arm trains on its questions (one trajectory each
    for +Right and +Right-Hard, as the paper's rows have)."""
    run = write_curated_run(str(tmp_path))
    arms = arm_rows(run)
    for row in funnel(run).table3:
        arm = arms[row["level"]]
        assert row["questions"] == arm[S.PROBLEM_ID].nunique(), row["level"]
        assert len(arm) == (row["questions"] if row["level"] in ONE_PER_QUESTION else row["rows"]), row["level"]


def test_an_arm_with_an_earlier_arms_rows_is_not_trained_again(tmp_path):
    arms = arm_rows(write_curated_run(str(tmp_path)))
    # the fixture's decontamination and mixing drop nothing: the corpus arm is right-hard-diverse's twin
    assert identical_arm("corpus", arms) == "right-hard-diverse"
    assert [identical_arm(arm, arms) for arm in ("all", "right", "right-hard", "right-hard-diverse")] == [None] * 4
    arms["right-hard"] = arms["right"].iloc[::-1]  # the student solved no question: the same rows, any order
    assert identical_arm("right-hard", arms) == "right"


def test_random_control_is_seeded(tmp_path):
    run = write_curated_run(str(tmp_path))
    draw = {seed: set(arm_rows(run, seed=seed)[RANDOM][S.ROLLOUT_ID]) for seed in (0, 0, 1, 2, 3)}
    assert set(arm_rows(run, seed=0)[RANDOM][S.ROLLOUT_ID]) == draw[0]
    assert len({frozenset(d) for d in draw.values()}) > 1  # 84 possible draws of 6 of 9: seeds differ


def test_an_unfinished_run_is_refused_with_the_missing_stage(tmp_path):
    with pytest.raises(ValueError, match="is not complete .run `ded run` first"):
        arm_rows(RunDir(str(tmp_path), "never-run"))
    run = write_curated_run(str(tmp_path))
    Path(run.stage(plan.DIVERSITY).path, SUCCESS).unlink()  # cut off during diversity selection
    with pytest.raises(ValueError, match=f"{plan.DIVERSITY.folder} is not complete"):
        arm_rows(run)


def test_an_unknown_arm_is_refused_with_the_choices_before_any_work(tmp_path):
    assert ARMS == (*plan.LEVELS, RANDOM, *OPTION_ARMS)
    with pytest.raises(ValueError, match="unknown ablation arm.s. diverse: choose from all, right, "):
        ablate(RunDir(str(tmp_path), "never-run"), load_config(), only=["corpus", "diverse"])


def test_seeds_combine_and_every_arm_is_measured_against_the_control():
    """Three seeds per arm: the mean of their scores, an error with both seed and question noise, and the
    gap to the random control with its interval; a twin arm carries its twin's scores."""
    def scores(*means):
        return [{"arith": {"questions": 20, "k": 2, "avg_at_k": m, "stderr": 0.05}} for m in means]

    arms = ("right-hard-diverse", "corpus", RANDOM)
    meta = {arm: {"rows": 6, "questions": 3} for arm in arms}
    meta["corpus"]["same_as"] = "right-hard-diverse"
    diverse_scores = scores(0.5, 0.6, 0.7)
    per_seed = {"right-hard-diverse": diverse_scores, "corpus": diverse_scores, RANDOM: scores(0.4, 0.4, 0.4)}
    results = _combine(meta, per_seed)
    diverse = results["right-hard-diverse"]["benchmarks"]["arith"]
    assert diverse["seeds"] == 3 and diverse["avg_at_k"] == pytest.approx(0.6)
    assert diverse["stderr"] == pytest.approx((0.05 ** 2 + 0.01 / 3) ** 0.5)  # questions + seeds (var 0.01)
    gap = diverse["vs_random"]
    assert gap["gap"] == pytest.approx(0.2)
    assert gap["low"] == pytest.approx(0.2 - 1.96 * (diverse["stderr"] ** 2 + 0.05 ** 2) ** 0.5, abs=1e-4)
    assert "vs_random" not in results[RANDOM]["benchmarks"]["arith"]
    assert results["corpus"]["benchmarks"] == results["right-hard-diverse"]["benchmarks"]

    summary = {"base": {"arith": {"questions": 20, "k": 2, "avg_at_k": 0.15, "stderr": 0.1}}, "arms": results}
    table = ablation_table(summary).splitlines()
    assert table[2] == "| base, untrained | - | - | arith | 15.0% | 10.0 | - | - | - |"
    assert table[3] == "| right-hard-diverse | 6 | 3 | arith | 60.0% | 7.6 | 3 | +20.0 [+2.1, +37.9] | - |"
    assert table[4].startswith("| corpus (= right-hard-diverse) | 6 | 3 | arith | 60.0% |")
    assert table[5].startswith("| random | 6 | 3 | arith | 40.0% | 5.0 | 3 | - |")
