"""avg@k pass@1 and its standard error, checked against hand arithmetic."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import ConfigError
from ded_ray.evaluate import format_table, in_date_window, score_benchmark, score_samples


def _samples(per_question: dict[str, list[str]], meta: dict[str, dict] | None = None) -> pd.DataFrame:
    rows = []
    for pid, verdicts in per_question.items():
        for v in verdicts:
            rows.append({S.PROBLEM_ID: pid, S.VERDICT: v, S.NUM_TOKENS: 10,
                         S.META: json.dumps((meta or {}).get(pid, {}))})
    return pd.DataFrame(rows)


def test_avg_at_k_and_stderr_by_hand():
    df = _samples({"a": ["correct", "correct", "wrong", "wrong"],      # 0.5
                   "b": ["correct"] * 4,                               # 1.0
                   "c": ["wrong", "unparsable", "timeout", "wrong"]})  # 0.0
    r = score_samples(df)
    assert r["questions"] == 3 and r["k"] == 4 and r["samples"] == 12
    assert r["avg_at_k"] == pytest.approx(0.5)
    # sample std of (0.5, 1, 0) is 0.5; / sqrt(3)
    assert r["stderr"] == pytest.approx(0.5 / math.sqrt(3))
    assert r["statuses"] == {"wrong": 4, "correct": 6, "unparsable": 1, "timeout": 1}


def test_unparsable_counts_as_not_correct_but_is_reported():
    r = score_samples(_samples({"a": ["unparsable", "correct"]}))
    assert r["avg_at_k"] == 0.5 and r["stderr"] is None and r["statuses"]["unparsable"] == 1


def test_splits_from_meta():
    df = _samples({"a": ["correct"], "b": ["wrong"], "c": ["correct"]},
                  meta={"a": {"difficulty": "easy"}, "b": {"difficulty": "hard"}, "c": {"difficulty": "easy"}})
    r = score_benchmark(df)
    assert r["splits"]["easy"]["avg_at_k"] == 1.0 and r["splits"]["hard"]["avg_at_k"] == 0.0
    table = format_table({"lcb": r})
    assert "| lcb | 3 | 1 | 66.7% |" in table and "lcb / hard" in table


def test_empty():
    assert score_samples(pd.DataFrame(columns=[S.PROBLEM_ID, S.VERDICT]))["avg_at_k"] is None


def test_mixed_benchmark_scores_each_domain():
    df = _samples({"m1": ["correct", "correct"], "m2": ["wrong", "correct"], "c1": ["wrong", "wrong"]})
    df[S.DOMAIN] = df[S.PROBLEM_ID].str[0].map({"m": "math", "c": "code"})
    r = score_benchmark(df)
    assert r["domains"]["math"]["avg_at_k"] == 0.75 and r["domains"]["code"]["avg_at_k"] == 0.0
    assert r["avg_at_k"] == pytest.approx(0.5)
    assert "|   mixed / code | 1 | 2 | 0.0% |" in format_table({"mixed": r})
    assert "domains" not in score_benchmark(df[df[S.DOMAIN] == "math"])  # one domain: no sub-rows


def _dated(dates: dict[str, str | None]) -> pd.DataFrame:
    return pd.DataFrame({S.PROBLEM_ID: list(dates),
                         S.META: [json.dumps({} if d is None else {"contest_date": d}) for d in dates.values()]})


def test_date_window_is_inclusive_by_day_and_counts_what_it_leaves_out():
    problems = _dated({"before": "2024-07-31T23:00:00", "first": "2024-08-01T00:00:00", "mid": "2024-11-05",
                       "last": "2025-02-01T12:00:00", "after": "2025-02-02"})
    inside, outside = in_date_window(problems, "2024-08-01", "2025-02-01")
    assert list(inside[S.PROBLEM_ID]) == ["first", "mid", "last"] and outside == 2
    assert in_date_window(problems, None, None) == (problems, 0)
    assert list(in_date_window(problems, "2025-01-01", None)[0][S.PROBLEM_ID]) == ["last", "after"]


def test_date_window_refuses_undated_problems():
    with pytest.raises(ConfigError, match="lcb.*without `contest_date`.*undated"):
        in_date_window(_dated({"dated": "2024-09-01", "undated": None}), "2024-08-01", None, "lcb")


def test_all_benchmarks_go_to_one_engine_pass_with_ids_under_their_benchmark(tmp_path):
    """Two benchmarks drawn from the same generated problems: one table, no id shared, each row traced back."""
    from ded_ray.config import load_config
    from ded_ray.steps.evaluate import benchmark_problems

    same = "{name: arith, generated: {families: [add_1digit], per_family: 3, seed: 5}}"
    config = load_config("demo", [f"eval.benchmarks=[{{name: first, source: {same}}}, {{name: second, source: {same}}}]"])
    problems, bench_of, facts = benchmark_problems(config)
    assert len(problems) == 6 and problems[S.PROBLEM_ID].is_unique
    assert sorted(bench_of.values()) == ["first"] * 3 + ["second"] * 3
    assert set(bench_of) == set(problems[S.PROBLEM_ID])
    assert all(pid.startswith(bench_of[pid] + "/") for pid in bench_of)
    assert facts == {"first": {"unreadable_rows": 0}, "second": {"unreadable_rows": 0}}


def test_benchmark_names_must_be_unique():
    from ded_ray.config import load_config

    with pytest.raises(ConfigError, match="benchmark names must be unique"):
        source = "{name: arith, generated: {families: [add_1digit], per_family: 1}}"
        load_config("demo", [f"eval.benchmarks=[{{name: a, source: {source}}}, {{name: a, source: {source}}}]"])
