"""Math verification: answer extraction, math-verify equivalence in worker processes, hard timeouts."""

from __future__ import annotations

import json
import time

import pytest

from ded_ray.schema import VERDICT_STATUSES
from ded_ray.verifiers.math import MathVerifierPool, extract_answer, verify_math


def wrap(gold: str) -> str:
    """A gold answer written the way a model would end its response."""
    return f"<think>\nLet me work it out.\n</think>\nWorking through the algebra, so the answer is $\\boxed{{{gold}}}$."


def load(shared_data, name: str) -> list[dict]:
    path = {"math500": "math500/math500.jsonl", "aime2024": "aime2024/aime2024.jsonl",
            "aime2025": "aime2025/aime2025.jsonl"}[name]
    return [json.loads(line) for line in (shared_data / path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def pool():
    with MathVerifierPool(workers=2, timeout_s=10.0) as p:
        yield p


# --- extraction ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<think>maybe \\boxed{1}</think> The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first \\boxed{2} then \\boxed{\\sqrt{3}}", "\\sqrt{3}"),
        ("nested: $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("So the final answer is $x = 3$.", "x = 3"),
        ("Answer: 42", "42"),
        ("\\fbox{7}", "7"),
        ("The result is \\boxed 5 indeed", "5"),
        ("I am not sure.", None),
        ("<think>the answer is 3</think>", None),  # thinking only: no final answer after </think>
        ("", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


# --- equivalence ---------------------------------------------------------------------------------------

EQUIVALENT = [  # (gold, a different but equivalent way a model writes it)
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "\\dfrac{1}{2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("[0, 1)", "[0,1)"),
    ("(1, 2)", "(1,2)"),
    ("\\{1, 2\\}", "\\{2, 1\\}"),
    ("50\\%", "50"),
    ("10\\text{ cm}", "10"),
    ("3", "x = 3"),
    ("90^\\circ", "90"),
    ("\\text{(C)}", "C"),
    ("1,000", "1000"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
]
DIFFERENT = [("3", "4"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("(1, 2)", "(2, 1)"), ("[0, 1)", "(0, 1)"),
             ("2\\sqrt{2}", "2\\sqrt{3}"), ("\\{1, 2\\}", "\\{1, 3\\}")]


def test_equivalent_forms_are_correct(pool):
    verdicts = pool.verify_many([(wrap(answer), gold) for gold, answer in EQUIVALENT])
    assert [v.status for v in verdicts] == ["correct"] * len(EQUIVALENT), [
        (g, a, v.detail) for (g, a), v in zip(EQUIVALENT, verdicts) if v.status != "correct"]


def test_different_answers_are_wrong(pool):
    verdicts = pool.verify_many([(wrap(answer), gold) for gold, answer in DIFFERENT])
    assert [v.status for v in verdicts] == ["wrong"] * len(DIFFERENT)


def test_no_answer_is_unparsable_not_wrong(pool):
    verdict = pool.verify_many([("I could not solve it.", "3")])[0]
    assert verdict.status == "unparsable" and verdict.extracted_answer is None


def test_verify_math_single_call():
    verdict = verify_math(wrap("\\frac{3}{4}"), "0.75")
    assert verdict.status == "correct" and verdict.extracted_answer == "\\frac{3}{4}" and verdict.elapsed_ms > 0


# --- real data -----------------------------------------------------------------------------------------


def test_every_math500_gold_verifies_correct(shared_data, pool):
    rows = load(shared_data, "math500")
    assert len(rows) == 500
    verdicts = pool.verify_many([(wrap(r["answer"]), r["answer"]) for r in rows])
    failures = [(r["unique_id"], r["answer"], v.status, v.detail) for r, v in zip(rows, verdicts)
                if v.status != "correct"]
    assert failures == []


def test_every_aime_gold_verifies_correct(shared_data, pool):
    rows = load(shared_data, "aime2024") + load(shared_data, "aime2025")
    assert len(rows) == 60
    verdicts = pool.verify_many([(wrap(r["answer"]), r["answer"]) for r in rows])
    assert [v.status for v in verdicts] == ["correct"] * 60


def test_plainly_wrong_answers_verify_wrong(shared_data, pool):
    """Integer golds (all AIME, the integer MATH-500 ones) answered with gold + 1, and swapped golds."""
    rows = load(shared_data, "aime2024") + load(shared_data, "aime2025")
    rows += [r for r in load(shared_data, "math500") if r["answer"].strip().isdigit()]
    items = [(wrap(str(int(r["answer"]) + 1)), r["answer"]) for r in rows]
    math500 = load(shared_data, "math500")
    fractions = [r["answer"] for r in math500 if r["answer"].startswith("\\frac")][:20]
    items += [(wrap(fractions[i]), fractions[i + 1]) for i in range(len(fractions) - 1)
              if fractions[i] != fractions[i + 1]]
    verdicts = pool.verify_many(items)
    assert len(items) > 150
    assert [(g, v.status) for (_, g), v in zip(items, verdicts) if v.status != "wrong"] == []


# --- never hang ----------------------------------------------------------------------------------------

PATHOLOGICAL = [
    "10^{10^{10}}",
    "9^{9^{9^{9}}}",
    "+".join(["x^{2}"] * 8000),  # a ~50k-character answer
    "(10^{10^{10}})!",
    "10^{10^{10}} - 10^{10^{10}} + 1",
]


@pytest.mark.parametrize("answer", PATHOLOGICAL[:3], ids=["tower", "power-tower", "50k-chars"])
def test_pathological_answer_times_out_and_worker_is_replaced(answer):
    with MathVerifierPool(workers=1, timeout_s=1.0) as p:
        verdict = p.verify_many([(wrap(answer), "5")])[0]
        assert verdict.status == "timeout", verdict
        assert p.replaced == 1
        # the replacement worker is healthy
        assert p.verify_many([(wrap("5"), "5")])[0].status == "correct"


def test_thousand_items_with_five_pathological_ones_finish_with_five_timeouts(shared_data):
    golds = [r["answer"] for r in load(shared_data, "math500")]
    items = [(wrap(golds[i % len(golds)]), golds[i % len(golds)]) for i in range(995)]
    for n, answer in enumerate(PATHOLOGICAL):
        items.insert(100 + 180 * n, (wrap(answer), "5"))
    started = time.monotonic()
    # 3 s per item: far above a normal check (~5 ms) even on a loaded shared machine.
    with MathVerifierPool(workers=2, timeout_s=3.0) as pool:  # as the verify stage runs it
        verdicts = pool.verify_many(items)
    elapsed = time.monotonic() - started
    statuses = [v.status for v in verdicts]
    assert len(verdicts) == 1000 and set(statuses) <= set(VERDICT_STATUSES)
    assert [i for i, s in enumerate(statuses) if s == "timeout"] == [100 + 180 * n for n in range(5)]
    assert statuses.count("correct") == 995
    # Not a speed check: a hang guard. A hung check would never return; bounded means finite and sane.
    assert elapsed < 600


# --- chunked dispatch: several items per round trip, per-item deadlines ------------------------------

CHUNK_GOLDS = ["\\frac{1}{2}", "(1, 2)", "[0, 1)", "2\\sqrt{2}", "\\{1, 2\\}", "3", "x^2 + 1", "\\frac{\\pi}{3}"]


def test_chunk_with_a_hanging_item_in_the_middle():
    """One chunk: only the hanging item is `timeout`; the rest are re-sent to the new worker, order kept."""
    golds = CHUNK_GOLDS[:4] + ["5"] + CHUNK_GOLDS[4:]
    items = [(wrap(g), g) for g in golds]
    items[4] = (wrap(PATHOLOGICAL[0]), "5")
    started = time.monotonic()
    with MathVerifierPool(workers=1, timeout_s=1.0, chunk_size=16) as p:
        verdicts = p.verify_many(items)
        assert p.replaced == 1
        assert p.verify_many([(wrap("7"), "7")])[0].status == "correct"  # the replacement is healthy
    assert [v.status for v in verdicts] == ["correct"] * 4 + ["timeout"] + ["correct"] * 4
    assert [v.extracted_answer for v in verdicts] == [g if i != 4 else PATHOLOGICAL[0]
                                                      for i, g in enumerate(golds)]
    assert time.monotonic() - started < 60  # a hang guard, not a speed check


def test_two_hanging_items_in_one_chunk_and_several_workers():
    golds = [CHUNK_GOLDS[i % len(CHUNK_GOLDS)] for i in range(30)]
    items = [(wrap(g), g) for g in golds]
    hangs = {3, 17}
    for i in hangs:
        items[i] = (wrap(PATHOLOGICAL[1]), "5")
    with MathVerifierPool(workers=2, timeout_s=1.0, chunk_size=8) as p:
        verdicts = p.verify_many(items)
        assert p.replaced == 2
    assert [i for i, v in enumerate(verdicts) if v.status == "timeout"] == sorted(hangs)
    assert all(v.status == "correct" for i, v in enumerate(verdicts) if i not in hangs)


def test_worker_crash_mid_chunk_costs_only_the_item_in_progress():
    """The worker is killed from outside while it is on item 3 of 8: item 3 is `error`, the rest verified."""
    import os
    import signal
    import threading

    golds = CHUNK_GOLDS[:3] + ["5"] + CHUNK_GOLDS[3:7]
    items = [(wrap(g), g) for g in golds]
    items[3] = (wrap(PATHOLOGICAL[2]), "5")  # a ~50k-character answer: busy for far longer than 3 s
    with MathVerifierPool(workers=1, timeout_s=60.0, chunk_size=16, memory_mb=None) as p:
        p.verify_many([(wrap("1"), "1")])  # started and ready
        victim = p._workers[0].process

        def crash() -> None:
            time.sleep(3.0)  # the three items before it take milliseconds
            os.kill(victim.pid, signal.SIGKILL)

        killer = threading.Thread(target=crash)
        started = time.monotonic()
        killer.start()
        verdicts = p.verify_many(items)
        killer.join()
        assert p.replaced == 1
    assert time.monotonic() - started < 50  # the kill, not the 60 s limit, ended item 3
    assert verdicts[3].status == "error" and "died" in verdicts[3].detail
    assert [v.status for i, v in enumerate(verdicts) if i != 3] == ["correct"] * 7


def test_chunk_size_one_is_one_item_per_round_trip():
    items = [(wrap(g), g) for g in CHUNK_GOLDS] + [(wrap("4"), "3")]
    with MathVerifierPool(workers=1, timeout_s=10.0, chunk_size=1) as p:
        verdicts = p.verify_many(items)
    assert [v.status for v in verdicts] == ["correct"] * len(CHUNK_GOLDS) + ["wrong"]


def test_large_answers_do_not_block_the_pipe():
    """Answers of ~20k characters: more than the pipe holds when chunked; the host must not deadlock."""
    big = "1" * 20000  # a 20k-digit number: cheap to check, big to send
    items = [(wrap(big), "3"), (wrap("3"), "3")] * 4
    with MathVerifierPool(workers=1, timeout_s=20.0, chunk_size=16) as p:
        verdicts = p.verify_many(items)
    assert [v.status for v in verdicts] == ["wrong", "correct"] * 4


def test_two_stage_parse_gives_the_same_sympy_as_math_verify(shared_data):
    """The worker's SLL-first ANTLR parse (its main speed-up) must not change any parse result."""
    from latex2sympy2_extended import latex2sympy2
    from math_verify.parser import parse_latex_cached
    from sympy import srepr

    from ded_ray.verifiers import _math_worker

    latex = [r["answer"] for r in load(shared_data, "math500")]
    latex += [str(r["answer"]) for r in load(shared_data, "aime2024") + load(shared_data, "aime2025")]
    latex += _math_worker.WARM_UP + [a for pair in EQUIVALENT + DIFFERENT for a in pair]

    def parsed() -> list[str]:
        out = []
        for text in latex:
            parse_latex_cached.cache_clear()
            _math_worker._parsed.clear()
            out.append(repr([x if isinstance(x, str) else srepr(x) for x in _math_worker._parse(text)]))
        return out

    original = latex2sympy2._Latex2Sympy.create_parser
    try:
        plain = parsed()
        assert _math_worker._two_stage_antlr()
        assert latex2sympy2._Latex2Sympy.create_parser is not original
        assert parsed() == plain
    finally:
        latex2sympy2._Latex2Sympy.create_parser = original
        parse_latex_cached.cache_clear()
        _math_worker._parsed.clear()
