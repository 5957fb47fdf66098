"""Domain quotas on real problems (MATH traces + HumanEval), seeded and order-independent."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import MixConfig
from ded_ray.stages.base import StageError
from ded_ray.stages.mix import MixStage, apply_quotas


@pytest.fixture(scope="module")
def mixed_rows(shared_data) -> pd.DataFrame:
    """30 math questions and 20 code questions, 3 trajectories each; a few rows already rejected."""
    rows = []
    math_lines = (shared_data / "reasoning_traces_thought_anchors" / "math_traces.jsonl").read_text().splitlines()
    code_lines = (shared_data / "humaneval" / "humaneval.jsonl").read_text().splitlines()
    items = [("math", json.loads(l)["problem_id"], json.loads(l)["problem"]) for l in math_lines[:30]]
    items += [("code", json.loads(l)["task_id"], json.loads(l)["prompt"]) for l in code_lines[:20]]
    for domain, pid, question in items:
        for i in range(3):
            rows.append({S.PROBLEM_ID: pid, S.DOMAIN: domain, S.QUESTION: question,
                         S.ROLLOUT_ID: f"{pid}#t#{i}", S.REJECT_REASON: None, S.REJECT_DETAIL: None})
    frame = pd.DataFrame(rows)
    frame.loc[frame.index % 7 == 0, S.REJECT_REASON] = "not_selected"
    return frame


def kept_ids(frame: pd.DataFrame) -> set[str]:
    return set(frame.loc[frame[S.REJECT_REASON].isna(), S.ROLLOUT_ID])


def test_quota_by_trajectory(mixed_rows):
    out, reports = apply_quotas(mixed_rows, {"math": 25, "code": 100}, by="trajectory", seed=3)
    alive = mixed_rows[S.REJECT_REASON].isna()
    kept = out[out[S.REJECT_REASON].isna()]
    assert (kept[S.DOMAIN] == "math").sum() == 25
    assert (kept[S.DOMAIN] == "code").sum() == (alive & (mixed_rows[S.DOMAIN] == "code")).sum()  # under quota
    over = out[S.REJECT_REASON] == "over_quota"
    assert over.sum() == (alive & (mixed_rows[S.DOMAIN] == "math")).sum() - 25
    assert out.loc[over, S.REJECT_DETAIL].str.contains("quota 25 of").all()
    # Earlier rejections are untouched and never count toward a quota.
    assert (out.loc[~alive, S.REJECT_REASON] == "not_selected").all()
    report = {r.domain: r for r in reports}
    assert report["math"].kept == 25 and report["math"].rejected_rows == over.sum()
    assert report["code"].rejected_rows == 0 and report["math"].seed == 3


def test_quota_by_question_keeps_whole_questions(mixed_rows):
    out, reports = apply_quotas(mixed_rows, {"math": 10, "code": 5}, by="question", seed=0)
    kept = out[out[S.REJECT_REASON].isna()]
    assert kept.groupby(S.DOMAIN)[S.PROBLEM_ID].nunique().to_dict() == {"math": 10, "code": 5}
    alive = mixed_rows[mixed_rows[S.REJECT_REASON].isna()]
    chosen = set(kept[S.PROBLEM_ID])
    # Every surviving row of a chosen question is kept.
    assert len(kept) == alive[S.PROBLEM_ID].isin(chosen).sum()
    assert {r.domain: r.kept for r in reports} == {"code": 5, "math": 10}


def test_choice_is_seeded_and_independent_of_row_order(mixed_rows):
    quotas = {"math": 20, "code": 20}
    a, _ = apply_quotas(mixed_rows, quotas, seed=7)
    b, _ = apply_quotas(mixed_rows.sample(frac=1.0, random_state=1), quotas, seed=7)
    c, _ = apply_quotas(mixed_rows, quotas, seed=8)
    assert kept_ids(a) == kept_ids(b)
    assert kept_ids(a) != kept_ids(c)


def test_no_quota_keeps_all_and_zero_drops_a_domain(mixed_rows):
    stage = MixStage.from_config(MixConfig(quotas={"code": 0}))
    out = stage(mixed_rows)
    assert out.loc[out[S.DOMAIN] == "math", S.REJECT_REASON].fillna("-").tolist() == \
        mixed_rows.loc[mixed_rows[S.DOMAIN] == "math", S.REJECT_REASON].fillna("-").tolist()
    assert out.loc[out[S.DOMAIN] == "code", S.REJECT_REASON].notna().all()
    assert {r["domain"]: r["quota"] for r in stage.report()} == {"code": 0, "math": None}


def test_bad_arguments_name_the_problem(mixed_rows):
    with pytest.raises(StageError, match="by must be"):
        apply_quotas(mixed_rows, {}, by="domain")
    with pytest.raises(StageError, match=">= 0"):
        apply_quotas(mixed_rows, {"math": -1})
    with pytest.raises(StageError, match="rollout_id"):
        apply_quotas(mixed_rows.drop(columns=[S.ROLLOUT_ID]), {"math": 1})
