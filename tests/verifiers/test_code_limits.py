"""Per-test and per-problem limits (from the problem's meta or the config), stop-at-first-failure, and the
stdout / return-value comparison matching LiveCodeBench's grader (lcb_runner/evaluation/testing_util.py)."""

from __future__ import annotations

import json
import time

import pytest

from ded_ray.verifiers.code import (
    MAX_OUTCOME_CHARS,
    MIN_MEMORY_MB,
    limits_for,
    parse_meta,
    run_tests,
)
from ded_ray.verifiers.sandbox import DEFAULT_TEST_TIMEOUT_S, SandboxLimits
from ded_ray.verifiers.sandbox_child import compare_stdout, compare_values

ECHO = [{"type": "stdin", "input": "", "output": "safe"}]
LOOP = "while True:\n    pass"


# --- limits from meta ----------------------------------------------------------------------------------


def test_meta_time_limit_is_the_per_test_limit():
    started = time.monotonic()
    verdict = run_tests(LOOP, ECHO, timeout_s=10, meta=json.dumps({"time_limit_s": 1}))
    elapsed = time.monotonic() - started
    assert verdict.status == "timeout", verdict.detail
    assert "1 s per test" in verdict.detail and "limits: 1 s/test, 10 s/problem" in verdict.detail
    assert elapsed < 5, elapsed  # the problem's 1 s, not the config's 10 s


def test_per_problem_budget_caps_the_tests_together():
    tests = ECHO * 5
    started = time.monotonic()
    verdict = run_tests(LOOP, tests, timeout_s=2, meta={"time_limit_s": 1}, all_tests=True)
    assert verdict.status == "timeout", verdict.detail
    assert time.monotonic() - started < 10
    assert not verdict.detail.startswith("5/5"), verdict.detail  # the budget ran out before the 5th test


def test_meta_memory_limit_applies():
    program = "x = bytearray(300 * 1024 ** 2)\nprint('safe')"
    assert run_tests(program, ECHO).status == "correct"  # 2048 MB configured
    verdict = run_tests(program, ECHO, meta={"memory_limit_mb": 256})
    assert verdict.status == "wrong" and "MemoryError" in verdict.detail and "256 MB" in verdict.detail, \
        verdict.detail


def test_limits_for_reads_meta_and_ignores_what_is_not_a_limit():
    base = SandboxLimits(timeout_s=10, memory_mb=2048)
    assert base.test_timeout_s == DEFAULT_TEST_TIMEOUT_S == 6.0  # LiveCodeBench's --timeout default
    for empty in (None, "", "  ", "{}", "not json", "[1]", float("nan"), {"time_limit_s": None},
                  {"time_limit_s": "fast", "memory_limit_mb": -1}, {"time_limit_s": 0}):
        assert limits_for(empty, base) == base, empty
    got = limits_for('{"time_limit_s": 2.0, "memory_limit_mb": 256.0, "rating": 800}', base)
    assert (got.test_timeout_s, got.cpu_s, got.memory_mb, got.timeout_s) == (2.0, 2.0, 256, 10)
    assert limits_for({"memory_limit_mb": 16}, base).memory_mb == MIN_MEMORY_MB  # the interpreter needs ~16
    assert parse_meta({"a": 1}) == {"a": 1} and parse_meta('{"a": 1}') == {"a": 1}


# --- stop at the first failure, or run all -------------------------------------------------------------

FIVE = [{"type": "stdin", "input": f"{i}\n", "output": f"{i}\n"} for i in range(5)]
WRONG_ON_1 = "x = int(input())\nprint(x if x != 1 else 7)"


def test_stops_at_the_first_failing_test_by_default():
    verdict = run_tests(WRONG_ON_1, FIVE)
    assert verdict.status == "wrong"
    assert verdict.detail.startswith("2/5 tests run: passed, wrong (test 1 wrong: wrong output: line 1: "
                                     "expected '1', got '7'); 1 passed"), verdict.detail


def test_all_tests_runs_every_test_with_the_same_status():
    verdict = run_tests(WRONG_ON_1, FIVE, all_tests=True)
    assert verdict.status == "wrong"
    assert verdict.detail.startswith("5/5 tests run: passed, wrong, passed x3 (test 1 wrong:"), verdict.detail
    assert "; 4 passed" in verdict.detail
    assert run_tests("print(input())", FIVE, all_tests=True).detail.startswith("5/5 tests run, all passed")


def test_detail_stays_short_however_many_tests_run():
    tests = [{"type": "stdin", "input": f"{i}\n", "output": f"{i}\n"} for i in range(40)]
    program = "x = int(input())\nprint(x if x % 2 else 'x' * 5000)"  # every other test wrong, long output
    verdict = run_tests(program, tests, all_tests=True)
    assert verdict.status == "wrong" and verdict.detail.startswith("40/40 tests run: wrong, passed"), \
        verdict.detail
    head = verdict.detail.split("; limits:")[0]
    assert len(head) <= MAX_OUTCOME_CHARS and "more groups" in head, head


# --- comparison: LiveCodeBench's rules -----------------------------------------------------------------


@pytest.mark.parametrize("got, want, ok", [
    ("1 2\n", "1 2", True),  # trailing newline
    ("1 2   \n\n\n", "  1 2", True),  # trailing spaces and blank lines at the end, leading spaces
    ("a\r\nb\r\n", "a\nb\n", True),  # \r\n: the per-line strip removes the \r
    ("a\rb", "a\nb", False),  # a lone \r does not split lines (LCB splits on \n only)
    ("1\n\n2\n", "1\n2\n", False),  # a blank line inside counts
    ("1.0\n", "1", True), ("1e3", "1000", True), ("-0", "0", True), ("007", "7", True),  # Decimal equality
    ("0.30000000000000004", "0.3", False),  # 0.1 + 0.2 printed: no tolerance
    ("0.333333", "0.3333333", False),
    ("10000000000000001", "10000000000000000", False),  # exact: no float rounding
    ("1   2", "1 2", True),  # numbers: split on any whitespace
    ("a  b", "a b", False),  # text: the stripped lines must be equal
    ("YES 1.0", "YES 1", False),  # one non-number token: exact match only
    ("1 2", "1 2 3", False),
    ("NaN", "NaN", True),  # equal text; as numbers NaN != NaN
    ("nan", "NaN", False),
    ("", "", True), ("\n", "", True), ("0", "", False),
])
def test_stdout_matches_livecodebench(got, want, ok):
    assert compare_stdout(got, want)[0] is ok


@pytest.mark.parametrize("got, want, ok", [
    ((1, 2), [1, 2], True),  # a returned tuple is a list
    ([(1, 2)], [[1, 2]], False),  # only at the top level, as in LCB
    (1, 1.0, True), (True, 1, True), (0.1 + 0.2, 0.3, False), (0.5, 0.5, True),
    ({"a": (1,)}, {"a": [1]}, False), (None, None, True), ("1", 1, False),
])
def test_return_values_match_livecodebench(got, want, ok):
    assert compare_values(got, want) is ok


def test_functional_tests_end_to_end_use_the_same_rules():
    tests = [{"type": "functional", "fn_name": "f", "input": "1\n2", "output": "[3, 0.3]"}]
    program = "class Solution:\n    def f(self, a, b):\n        return (a + b, {})\n"
    assert run_tests(program.format("0.3"), tests).status == "correct"
    verdict = run_tests(program.format("0.1 + 0.2"), tests)
    assert verdict.status == "wrong" and "0.30000000000000004" in verdict.detail, verdict.detail


def test_bench_skips_the_real_data_rows_without_shared_data(tmp_path, monkeypatch):
    from ded_ray.bench import verify as bench_verify

    monkeypatch.setenv("DED_SHARED_DATA", str(tmp_path))  # an empty folder: no LeetCode, no HumanEval
    assert bench_verify._bench_code_real(quick=True) == []
