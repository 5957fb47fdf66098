"""The embedded demo's generated problems: deterministic, distinct, correct answers (math) and tests (code)."""

from __future__ import annotations

import json
import operator
import random

import pytest

from ded_ray import schema as S
from ded_ray.generated import (
    CODE_FAMILIES,
    FAMILIES,
    MATH_FAMILIES,
    generate_problems,
    problem_id_for,
)

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def test_rows_have_the_problem_schema_columns_and_correct_answers():
    rows = generate_problems(sorted(MATH_FAMILIES), per_family=15, seed=3)
    assert len(rows) == 15 * len(MATH_FAMILIES)
    for row in rows:
        assert list(row) == S.PROBLEM_SCHEMA.names
        meta = json.loads(row[S.META])
        assert row[S.DOMAIN] == "math" and row[S.SOURCE] == "generated" and row[S.TESTS] == ""
        # The answer is recomputed from the operands the question was built from, and the operands
        # appear in the question text.
        assert row[S.ANSWER] == str(OPS[meta["op"]](meta["a"], meta["b"]))
        assert str(meta["a"]) in row[S.QUESTION] and str(meta["b"]) in row[S.QUESTION]
        assert int(row[S.ANSWER]) >= 0
        assert row[S.PROBLEM_ID] == problem_id_for(meta["family"], row[S.QUESTION])


def test_deterministic_per_seed_and_distinct_within_a_family():
    a = generate_problems(["add_1digit", "word_1step"], 20, seed=7)
    b = generate_problems(["add_1digit", "word_1step"], 20, seed=7)
    c = generate_problems(["add_1digit", "word_1step"], 20, seed=8)
    assert a == b
    assert [r[S.QUESTION] for r in a] != [r[S.QUESTION] for r in c]
    assert len({r[S.PROBLEM_ID] for r in a}) == len(a) == len({r[S.QUESTION] for r in a})


def test_family_streams_are_independent_of_the_other_families():
    alone = generate_problems(["mul_1digit"], 10, seed=1)
    together = generate_problems(["add_1digit", "mul_1digit"], 10, seed=1)
    assert together[10:] == alone


def test_question_formats_and_ranges():
    for row in generate_problems(["add_2digit_nocarry"], 30, seed=0):
        meta = json.loads(row[S.META])
        a, b = meta["a"], meta["b"]
        assert 10 <= a <= 99 and 10 <= b <= 99
        assert a % 10 + b % 10 <= 9 and a // 10 + b // 10 <= 9  # no carry anywhere
        assert row[S.QUESTION] == f"What is {a} + {b}?"
    for row in generate_problems(["mul_1digit"], 30, seed=0):
        meta = json.loads(row[S.META])
        assert 2 <= meta["a"] <= 9 and 2 <= meta["b"] <= 9


def test_exclude_keeps_held_out_splits_disjoint_and_ids_are_seed_independent():
    train = generate_problems(["add_1digit"], 40, seed=0)
    held = generate_problems(["add_1digit"], 30, seed=1, exclude={r[S.PROBLEM_ID] for r in train})
    assert not {r[S.QUESTION] for r in train} & {r[S.QUESTION] for r in held}
    # Without exclusion the seeds overlap on some questions, and a shared question has the same id.
    other = generate_problems(["add_1digit"], 40, seed=1)
    shared = {r[S.QUESTION]: r[S.PROBLEM_ID] for r in train}.items() & {r[S.QUESTION]: r[S.PROBLEM_ID] for r in other}.items()
    assert shared


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="unknown problem families"):
        generate_problems(["add_3digit"], 1, 0)
    with pytest.raises(ValueError, match="distinct questions"):
        generate_problems(["add_1digit"], 82, 0)  # only 9 * 9 = 81 exist


def test_the_demos_training_questions_are_drawn_around_its_held_out_ones():
    from ded_ray.config import load_config
    from ded_ray.io import read_problems

    config = load_config()  # the embedded demo
    training, _ = read_problems(config.problems.sources[0])
    heldout, _ = read_problems(config.eval.benchmarks[0].source)
    assert len(training) == 48 and len(heldout) == 60
    assert not set(training[S.QUESTION]) & set(heldout[S.QUESTION])
    # a smaller held-out set (a test's override) is still the one excluded: the YAML anchor is shared
    small = load_config(None, ["eval.benchmarks.0.source.generated.per_family=2"])
    assert small.problems.sources[0].generated.exclude[0] == small.eval.benchmarks[0].source


# --- code families ---------------------------------------------------------------------------------------


def test_families_are_split_by_domain():
    assert set(MATH_FAMILIES) | set(CODE_FAMILIES) == set(FAMILIES)
    assert len(CODE_FAMILIES) >= 8 and not set(MATH_FAMILIES) & set(CODE_FAMILIES)
    assert {r[S.DOMAIN] for r in generate_problems(list(CODE_FAMILIES), 3, 0)} == {"code"}


@pytest.mark.parametrize("family", CODE_FAMILIES)
def test_code_rows_have_native_assert_tests_and_starter_code(family):
    from ded_ray.stages.prompt import code_instructions
    from ded_ray.verifiers.code import validate_tests

    rows = generate_problems([family], 24, seed=5)  # every family has dozens of distinct questions
    assert len({r[S.QUESTION] for r in rows}) == 24
    for row in rows:
        assert list(row) == S.PROBLEM_SCHEMA.names
        assert row[S.DOMAIN] == "code" and row[S.ANSWER] == "" and row[S.SOURCE] == "generated"
        assert row[S.PROBLEM_ID] == problem_id_for(family, row[S.QUESTION])
        tests = validate_tests(json.loads(row[S.TESTS]))
        meta = json.loads(row[S.META])
        assert meta["family"] == family
        assert len(tests) == 1 and tests[0]["type"] == "assert" and tests[0]["entry_point"] == meta["name"]
        assert tests[0]["code"].startswith("def check(candidate):") and tests[0]["code"].count("assert ") >= 4
        assert meta["starter_code"] == f"def {meta['name']}({meta['args']}):"
        assert f"`{meta['name']}({meta['args']})`" in row[S.QUESTION]  # the question names the signature itself
        assert "solution" not in meta and "return" not in row[S.TESTS].replace("candidate", "")
        # the prompt stage turns the row into "complete the starter code" with this signature
        assert meta["starter_code"] in code_instructions(row[S.TESTS], row[S.META])


def test_code_questions_deterministic_and_ids_and_tests_seed_independent():
    families = ["code_larger", "code_count_char"]
    a = generate_problems(families, 20, seed=7)
    assert a == generate_problems(families, 20, seed=7)
    b = generate_problems(families, 20, seed=8)
    assert [r[S.QUESTION] for r in a] != [r[S.QUESTION] for r in b]
    # a question drawn under two seeds has the same id and the same tests
    by_question = {r[S.QUESTION]: r for r in a}
    shared = [r for r in generate_problems(families, 60, seed=9) if r[S.QUESTION] in by_question]
    assert shared
    for row in shared:
        assert row == by_question[row[S.QUESTION]]
    # adding code families leaves the math streams alone
    assert generate_problems(["add_1digit", "code_abs"], 10, seed=1)[:10] == generate_problems(["add_1digit"], 10, 1)


def test_code_exclude_keeps_splits_disjoint():
    train = generate_problems(["code_abs"], 30, seed=0)
    held = generate_problems(["code_abs"], 20, seed=1, exclude={r[S.PROBLEM_ID] for r in train})
    assert not {r[S.QUESTION] for r in train} & {r[S.QUESTION] for r in held}
    by_text = generate_problems(["code_abs"], 20, seed=1, exclude={r[S.QUESTION] for r in train})
    assert not {r[S.QUESTION] for r in train} & {r[S.QUESTION] for r in by_text}
    with pytest.raises(ValueError, match="distinct questions"):
        generate_problems(["code_abs"], 61, 0)  # 5 names x 4 arguments x 3 wordings


def _sandbox():
    """The real sandbox; a sandbox that cannot run here is a failure, as everywhere else in the suite."""
    from ded_ray.verifiers.code import run_tests

    return run_tests


@pytest.mark.parametrize("family", CODE_FAMILIES)
def test_reference_solution_passes_and_a_wrong_one_fails_in_the_sandbox(family):
    run_tests = _sandbox()
    # Replay the generator's own stream (seeded "<seed>:<family>"): its first item is the first row.
    item = FAMILIES[family](random.Random(f"0:{family}"))
    row = generate_problems([family], 1, seed=0)[0]
    assert row[S.QUESTION] == item.question
    tests = json.loads(row[S.TESTS])
    assert tests == list(item.tests)
    assert run_tests(item.solution, tests).status == "correct", (item.question, item.solution)
    wrong = f"```python\n{item.meta['starter_code']}\n    return None\n```"
    assert run_tests(wrong, tests).status == "wrong"


def test_reference_solutions_pass_every_question_of_every_family_in_process():
    """Cheap exhaustive check without the sandbox: each reference solution satisfies its asserts."""
    for family in CODE_FAMILIES:
        rng = random.Random(f"all:{family}")
        for _ in range(40):
            item = FAMILIES[family](rng)
            namespace: dict = {}
            exec(item.solution.strip("`\n").removeprefix("python\n"), namespace)  # noqa: S102 (our own code)
            test = item.tests[0]
            exec(test["code"], namespace)  # noqa: S102
            namespace["check"](namespace[test["entry_point"]])
