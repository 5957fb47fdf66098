"""Verdict honesty: the program's failures are `wrong`, the harness's own failures are `error`.

On real LiveCodeBench rows: a correct program is `correct`; a program that raises, exits non-zero, prints or
returns the wrong thing is `wrong`; the same correct program against a corrupted test (not JSON, a key
missing, a wrong type, an unknown test type) or against a test our comparison cannot handle is `error`,
with the failing test's index and the problem in the detail, never `wrong`.
"""

from __future__ import annotations

import json

import pytest

from ded_ray.verifiers import code as code_module
from ded_ray.verifiers import sandbox_child
from ded_ray.verifiers.code import convert_tests, run_tests

STDIN_QID = "abc365_a"  # days in year Y
STDIN_PROGRAM = "y = int(input())\nprint(366 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 365)\n"
FUNCTIONAL_QID = "3676"  # smallest x >= n whose binary form is all ones
FUNCTIONAL_PROGRAM = ("class Solution:\n    def smallestNumber(self, n: int) -> int:\n"
                      "        return (1 << n.bit_length()) - 1\n")
ENTRY = "Solution().smallestNumber"  # for the assert-type tests, as LeetCode's check(candidate) calls it
ODD_RETURN = ("class Odd:\n            def __eq__(self, other):\n                raise TypeError('no')\n"
              "        return Odd()")




@pytest.fixture(scope="module")
def lcb(shared_data):
    """question_id -> our test dicts, for the two problems used here."""
    path = shared_data / "livecodebench" / "lcb_v5_2408_2502_public_tests.jsonl"
    rows = {r["question_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    tests = {qid: convert_tests(rows[qid]["tests"], "lcb", starter_code=rows[qid]["starter_code"])
             for qid in (STDIN_QID, FUNCTIONAL_QID)}
    assert {t["type"] for t in tests[STDIN_QID]} == {"stdin"}
    assert {t["type"] for t in tests[FUNCTIONAL_QID]} == {"functional"}
    assert len(tests[FUNCTIONAL_QID]) >= 2  # the corrupted test is the last: the ones before it must pass
    return tests


def test_correct_programs_are_correct(lcb):
    for qid, program in ((STDIN_QID, STDIN_PROGRAM), (FUNCTIONAL_QID, FUNCTIONAL_PROGRAM)):
        verdict = run_tests(program, lcb[qid])
        assert verdict.status == "correct", (qid, verdict.detail)


@pytest.mark.parametrize("qid, program, why", [
    (STDIN_QID, "raise ValueError('boom')", "ValueError"),
    (STDIN_QID, "import sys\nsys.exit(3)", "SystemExit(3)"),
    (STDIN_QID, "print(0)", "wrong output"),
    (STDIN_QID, "print(365", "SyntaxError"),
    (FUNCTIONAL_QID, FUNCTIONAL_PROGRAM.replace("return (1", "raise KeyError('x')  # (1"), "KeyError"),
    (FUNCTIONAL_QID, FUNCTIONAL_PROGRAM.replace("- 1", "- 2"), "expected"),
    (FUNCTIONAL_QID, FUNCTIONAL_PROGRAM.replace("smallestNumber", "smallest"), "AttributeError"),
    # it returns an object whose comparison raises (as a numpy array's would): the program's doing
    (FUNCTIONAL_QID, FUNCTIONAL_PROGRAM.replace("return (1 << n.bit_length()) - 1", ODD_RETURN),
     "cannot be compared"),
])
def test_program_failures_are_wrong(lcb, qid, program, why):
    verdict = run_tests(program, lcb[qid])
    assert verdict.status == "wrong" and why in verdict.detail, verdict.detail


CORRUPTIONS = {  # name -> (how the last functional test is corrupted, words the detail must contain)
    "input not JSON": (lambda t: {**t, "input": "n = 5"}, "input line 1 is not JSON"),
    "output not JSON": (lambda t: {**t, "output": "seven"}, "output is not JSON"),
    "no output": (lambda t: {k: v for k, v in t.items() if k != "output"}, "output"),
    "no fn_name": (lambda t: {k: v for k, v in t.items() if k != "fn_name"}, "fn_name"),
    "fn_name not str": (lambda t: {**t, "fn_name": 5}, "'fn_name' is int"),
    "unknown type": (lambda t: {**t, "type": "stdio"}, "'stdio'"),
    "stdin input not str": (lambda t: {"type": "stdin", "input": [5], "output": "7"}, "'input' is list"),
    "assert code does not compile": (lambda t: {"type": "assert", "code": "def check(f):\n    assert f(5) =",
                                                "entry_point": ENTRY}, "does not compile"),
    "entry_point not str": (lambda t: {"type": "assert", "code": "def check(f): pass", "entry_point": 7},
                            "'entry_point' is int"),
}


@pytest.mark.parametrize("through_host_check", [True, False], ids=["run_tests", "sandbox-only"])
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_test_is_an_error_naming_it(lcb, monkeypatch, name, through_host_check):
    corrupt, words = CORRUPTIONS[name]
    tests = [*lcb[FUNCTIONAL_QID][:-1], corrupt(lcb[FUNCTIONAL_QID][-1])]
    if not through_host_check:  # skip the host-side key check: the runner must catch it on its own
        monkeypatch.setattr(code_module, "validate_tests", lambda tests: tests)
    verdict = run_tests(FUNCTIONAL_PROGRAM, tests)
    assert verdict.status == "error", verdict.detail
    assert f"test {len(tests) - 1}" in verdict.detail and words in verdict.detail, verdict.detail


def test_a_valid_assert_test_passes(lcb):  # the assert corruptions above break only the test, not the kind
    check = {"type": "assert", "code": "def check(f):\n    assert f(5) == 7\n", "entry_point": ENTRY}
    assert run_tests(FUNCTIONAL_PROGRAM, [*lcb[FUNCTIONAL_QID], check]).status == "correct"


# Inputs that truly break our comparison code today (not the program): if the comparison is made to cope
# with them, these verdicts become correct/wrong and a new breaking input is needed here.


def test_stdout_comparison_failure_is_an_error(lcb):
    # "sNaN" parses as a signalling-NaN Decimal, and comparing one raises decimal.InvalidOperation
    tests = [*lcb[STDIN_QID], {"type": "stdin", "input": "2023\n", "output": "sNaN\n"}]
    verdict = run_tests(STDIN_PROGRAM, tests)
    assert verdict.status == "error", verdict.detail
    assert f"test {len(tests) - 1}" in verdict.detail, verdict.detail
    assert "comparing stdout" in verdict.detail and "InvalidOperation" in verdict.detail, verdict.detail


def test_plain_return_values_compare_like_livecodebench(lcb):
    # Once broke our comparison (math.isclose of a 401-digit int); LiveCodeBench's plain `==` copes: wrong.
    tests = [*lcb[FUNCTIONAL_QID], {**lcb[FUNCTIONAL_QID][0], "input": "1000", "output": "0.5"}]
    assert all(t["input"] != "1000" for t in lcb[FUNCTIONAL_QID])
    program = FUNCTIONAL_PROGRAM.replace("return (1", "return 10 ** 400 if n == 1000 else (1")
    verdict = run_tests(program, tests)
    assert verdict.status == "wrong" and f"test {len(tests) - 1}" in verdict.detail, verdict.detail


def test_return_value_comparison_failure_is_a_harness_error(monkeypatch):
    # `==` of plain values no longer raises on any input we know, so the comparison is made to fail here
    # (in-process): a plain result whose comparison raises is our bug, reported as an error, not wrong.
    def broken(got, want):
        raise OverflowError("comparison broke")

    monkeypatch.setattr(sandbox_child, "compare_values", broken)
    record = sandbox_child._judge_value([1, 2], [1, 2])
    assert record["ok"] is False and record["error"] is True and "OverflowError" in record["why"], record
