"""Decontamination against real evaluation sets: a planted MATH-500 question is caught, clean ones are not."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import DecontamConfig
from ded_ray.stages.base import StageError
from ded_ray.stages.decontaminate import DecontaminateStage, EvalIndex, normalize_words


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def math500(shared_data) -> pd.DataFrame:
    rows = read_jsonl(shared_data / "math500" / "math500.jsonl")
    return pd.DataFrame({S.PROBLEM_ID: [r["unique_id"] for r in rows], S.QUESTION: [r["problem"] for r in rows],
                         S.SOURCE: "math500"})


@pytest.fixture(scope="module")
def clean_training(shared_data) -> pd.DataFrame:
    """153 MATH training-split problems (SOURCES.md: none is in MATH-500)."""
    rows = read_jsonl(shared_data / "reasoning_traces_thought_anchors" / "math_traces.jsonl")
    return pd.DataFrame({S.PROBLEM_ID: [r["problem_id"] for r in rows], S.QUESTION: [r["problem"] for r in rows],
                         S.ROLLOUT_ID: [f'{r["problem_id"]}#t#0' for r in rows]})


def test_planted_math500_question_is_caught_and_clean_ones_are_not(math500, clean_training):
    planted_item = math500.iloc[123]
    # The leak as it would arrive: re-spaced, re-cased, wrapped in an instruction.
    planted = "Solve the following problem.\n\n" + "  ".join(planted_item[S.QUESTION].upper().split())
    training = pd.concat([
        clean_training,
        pd.DataFrame({S.PROBLEM_ID: ["planted"], S.QUESTION: [planted], S.ROLLOUT_ID: ["planted#t#0"]}),
    ], ignore_index=True)
    out = DecontaminateStage.from_config(DecontamConfig(ngram=13), math500)(training)
    caught = out[out[S.REJECT_REASON] == "contaminated"].set_index(S.PROBLEM_ID)[S.REJECT_DETAIL]
    assert f"math500/{planted_item[S.PROBLEM_ID]}" in caught["planted"]
    # No training problem is *identical* to a MATH-500 one (SOURCES.md), but one is a template sibling
    # ("Daniel works at an electronics store… toaster" vs "… television"): 13-gram overlap rightly flags it.
    assert set(caught.index) == {"planted", "problem_839"}
    assert "math500/test/algebra/1332.json" in caught["problem_839"]
    assert len(out) == len(training)


@pytest.mark.parametrize("n", [8, 13, 20])
def test_every_math500_question_matches_itself(math500, clean_training, n, record_property):
    index = EvalIndex(math500, n=n)
    for pid, question in zip(math500[S.PROBLEM_ID], math500[S.QUESTION]):
        hit = index.match(question)
        assert hit is not None, pid
    # Shorter n flags more shared boilerplate ("where m and n are relatively prime positive integers").
    flagged = sum(index.match(q) is not None for q in clean_training[S.QUESTION])
    record_property(f"clean_flagged_at_{n}", flagged)
    assert flagged <= {8: 20, 13: 1, 20: 0}[n]


def test_short_questions_use_the_whole_normalised_question():
    evals = pd.DataFrame({S.PROBLEM_ID: ["e1", "e2"], S.QUESTION: [
        "A long evaluation problem: what is the smallest prime greater than 100? Give a proof of minimality.",
        "Compute $2+3$.",
    ]})
    index = EvalIndex(evals, n=13, min_words=5)
    # 8 words < 13, appears word for word inside e1.
    assert index.match("What is the smallest prime greater than 100?")[0] == "e1"
    # Fewer than min_words: only an identical text matches.
    assert index.match("compute 2 + 3")[0] == "e2"
    assert index.match("Compute $2-3$.") is None and index.match("compute 2 * 3") is None  # other operator
    assert index.match("Compute 2+3 and then 4") is None
    assert index.match("what is the smallest prime")[0] == "e1"  # 5 words = min_words: a run of e1
    assert index.match("what is the smallest") is None  # 4 words: would need to equal an item
    strict = EvalIndex(evals, n=13)  # default min_words = 8
    assert strict.match("what is the smallest prime") is None
    assert strict.match("What is the smallest prime greater than 100?")[0] == "e1"  # 8 words


def test_eval_items_need_ids_and_questions():
    with pytest.raises(StageError, match="problem_id"):
        EvalIndex(pd.DataFrame({S.QUESTION: ["x"]}))
    assert normalize_words("Let $f(x) = x^2$;  find f(3).") == ("let", "f", "x", "x", "2", "find", "f", "3")
