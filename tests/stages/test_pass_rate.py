"""Question compression by student pass rate, and the correctness filter before it (real MATH traces)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import PassRateConfig
from ded_ray.stages.base import StageError
from ded_ray.stages.correctness import reject_incorrect
from ded_ray.stages.pass_rate import PassRateStage, student_pass_rates


def math_trace_rows(shared_data, limit: int = 40) -> pd.DataFrame:
    """Teacher rows from real DeepSeek-R1-Distill MATH traces, graded by their authors (`is_correct`)."""
    rows = []
    path = shared_data / "reasoning_traces_thought_anchors" / "math_traces.jsonl"
    for line in path.read_text().splitlines()[:limit]:
        item = json.loads(line)
        trace = item["traces"][0]
        rows.append({
            S.PROBLEM_ID: item["problem_id"], S.DOMAIN: "math", S.QUESTION: item["problem"],
            S.ANSWER: item["gt_answer"], S.TEACHER: "r1-distill", S.ROLLOUT_ID: f'{item["problem_id"]}#r1-distill#0',
            S.RESPONSE: trace["completion"], S.VERDICT: "correct" if trace["is_correct"] else "wrong",
            S.FORMAT_OK: "</think>" in trace["completion"], S.LENGTH_OK: True,
        })
    return pd.DataFrame(rows)


def student_rows(pattern: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{S.PROBLEM_ID: pid, S.SAMPLE_IDX: i, S.VERDICT: v} for pid, verdicts in pattern.items() for i, v in enumerate(verdicts)]
    )


def test_pass_rate_is_correct_over_k():
    rates = student_pass_rates(student_rows({
        "a": ["correct"] * 4, "b": ["correct", "wrong", "correct", "unparsable"], "c": ["timeout", "wrong", "error", "wrong"],
    }), k=4).set_index(S.PROBLEM_ID)
    assert rates[S.PASS_RATE].to_dict() == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert rates["n_unverified"].to_dict() == {"a": 0, "b": 1, "c": 2}
    with pytest.raises(StageError, match="more than k=2"):
        student_pass_rates(student_rows({"a": ["correct"] * 3}), k=2)
    with pytest.raises(StageError, match="verdict"):
        student_pass_rates(pd.DataFrame({S.PROBLEM_ID: ["a"]}))


def test_too_easy_questions_are_rejected_on_real_traces(shared_data):
    teacher = math_trace_rows(shared_data, limit=12)
    ids = teacher[S.PROBLEM_ID].tolist()
    rng = np.random.default_rng(0)
    # k = 4 student rollouts per question with a known number of correct ones: 0..4, cycling.
    pattern = {pid: ["correct"] * (i % 5) + ["wrong"] * (4 - i % 5) for i, pid in enumerate(ids[:-1])}
    pattern = {pid: list(rng.permutation(v)) for pid, v in pattern.items()}
    rates = student_pass_rates(student_rows(pattern), k=4)
    out = PassRateStage.from_config(PassRateConfig(threshold=0.5), rates)(teacher)

    expected_rate = {pid: (i % 5) / 4 for i, pid in enumerate(ids[:-1])}
    by_id = out.set_index(S.PROBLEM_ID)
    for pid, rate in expected_rate.items():
        assert by_id.loc[pid, S.PASS_RATE] == rate
        if rate > 0.5:
            assert by_id.loc[pid, S.REJECT_REASON] == "too_easy"
            assert f"{rate:.3f}" in by_id.loc[pid, S.REJECT_DETAIL] and "/4" in by_id.loc[pid, S.REJECT_DETAIL]
        else:
            assert pd.isna(by_id.loc[pid, S.REJECT_REASON])
    # The last question has no student rollouts: unknown difficulty is kept, not guessed easy.
    assert np.isnan(by_id.loc[ids[-1], S.PASS_RATE]) and pd.isna(by_id.loc[ids[-1], S.REJECT_REASON])
    assert len(out) == len(teacher)  # a filter never drops rows


def test_threshold_is_strict_and_earlier_reasons_survive():
    teacher = pd.DataFrame({S.PROBLEM_ID: ["a", "b", "c"], S.REJECT_REASON: [None, None, "wrong"],
                            S.REJECT_DETAIL: [None, None, "2 != 3"]})
    out = PassRateStage({"a": 0.75, "b": 1.0, "c": 1.0}, threshold=0.75)(teacher)
    assert list(out[S.REJECT_REASON].fillna("-")) == ["-", "too_easy", "wrong"]
    assert out[S.REJECT_DETAIL].iloc[2] == "2 != 3"
    with pytest.raises(StageError, match="threshold"):
        PassRateStage({}, threshold=1.5)


def test_correctness_filter_on_real_traces(shared_data):
    teacher = math_trace_rows(shared_data, limit=60)
    out = reject_incorrect(teacher)
    wrong = teacher[S.VERDICT] == "wrong"
    unformatted = ~teacher[S.FORMAT_OK]
    # Paper order: length, format, then correctness — one reason per row.
    assert (out.loc[unformatted, S.REJECT_REASON] == "format").all()
    assert (out.loc[wrong & ~unformatted, S.REJECT_REASON] == "wrong").all()
    assert out.loc[~wrong & ~unformatted, S.REJECT_REASON].isna().all()
    assert wrong.any() and unformatted.any()


def test_correctness_reasons_and_unchecked_flags():
    frame = pd.DataFrame({
        S.VERDICT: ["correct", "wrong", None, "correct", "timeout", "unparsable", "correct"],
        S.VERDICT_DETAIL: ["", "got 2, gold 3", "", "", "5 s", "no answer", ""],
        S.FORMAT_OK: pd.array([True, True, True, False, None, True, None], dtype="boolean"),
        S.LENGTH_OK: pd.array([True, True, True, True, True, True, False], dtype="boolean"),
        S.NUM_TOKENS: [5, 5, 5, 5, 5, 5, 99999],
    })
    out = reject_incorrect(frame)
    assert list(out[S.REJECT_REASON].fillna("-")) == [
        "-", "wrong", "unverified", "format", "timeout", "unparsable", "too_long"]
    assert out[S.REJECT_DETAIL].iloc[1] == "got 2, gold 3"
    assert "99999" in out[S.REJECT_DETAIL].iloc[6]
    assert frame.get(S.REJECT_REASON) is None  # the input is not modified
