"""Problems generated from a seed: the embedded demo's data set (arithmetic and tiny code tasks).

No benchmark text: every question comes from a template in this file. Math families have an exact integer
answer. They were chosen for SmolLM2-135M (MEASURED.md): 1-digit addition and multiplication are in its reach
with many questions at a middle pass rate (what pass-rate compression and diversity selection need);
2-digit addition and one-step word problems are mostly out of reach (a hard held-out split).

Code families (`code_*`, domain `code`) are one-line Python functions to write, with `assert` tests in our
native format (`verifiers/code.py`: `def check(candidate): ...` called on the entry point) and the starter
code (`def name(args):`) in `meta.starter_code`, which the prompt stage appends. Names, arguments, constants
and wording vary with the seed; the tests are a function of the question's parameters only, so a question
has the same tests (and id) whatever the seed. Each code item also carries a reference solution (never
written into the rows) that the unit tests run against its own tests. docs/code-measured.md has
SmolLM2-135M's pass rates per family and prompt style.

`problem_id` is derived from the family and the question text (`gen-<family>-<8 hex>`), not from the seed
or the position: the same question gets the same id in every run, so resume, decontamination and
train/held-out splits made from different seeds can compare ids.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ded_ray import schema as S

SOURCE_NAME = "generated"

# Word-problem vocabulary: (name, pronoun) and countable items.
_NAMES = [("Sam", "He"), ("Mia", "She"), ("Leo", "He"), ("Ava", "She"), ("Noah", "He"), ("Zoe", "She"),
          ("Omar", "He"), ("Lina", "She"), ("Ben", "He"), ("Ruth", "She")]
_ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "cards", "shells", "stamps", "books", "eggs"]


@dataclass(frozen=True)
class Item:
    question: str
    answer: int | str  # "" for code
    meta: dict
    domain: str = "math"
    tests: tuple[dict, ...] = ()  # code: native test dicts (one assert test)
    solution: str | None = None  # code: a reference solution; not written into the rows


def _add_1digit(rng: random.Random) -> Item:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return Item(f"What is {a} + {b}?", a + b, {"op": "+", "a": a, "b": b})


def _mul_1digit(rng: random.Random) -> Item:
    # Factors from 2: "1 * n" is a copy task, not multiplication (64 distinct questions).
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return Item(f"What is {a} * {b}?", a * b, {"op": "*", "a": a, "b": b})


def _add_2digit_nocarry(rng: random.Random) -> Item:
    # Two 2-digit numbers whose units and tens digits each sum to at most 9: no carrying anywhere.
    ta = rng.randint(1, 8)
    tb = rng.randint(1, 9 - ta)
    ua = rng.randint(0, 9)
    ub = rng.randint(0, 9 - ua)
    a, b = 10 * ta + ua, 10 * tb + ub
    return Item(f"What is {a} + {b}?", a + b, {"op": "+", "a": a, "b": b})


def _word_1step(rng: random.Random) -> Item:
    name, pronoun = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        q = f"{name} has {a} {item}. {pronoun} gets {b} more. How many {item} does {name} have now?"
        return Item(q, a + b, {"op": "+", "a": a, "b": b, "template": kind})
    if kind == 1:
        a = rng.randint(5, 20)
        b = rng.randint(1, a - 1)
        q = f"{name} had {a} {item} and gave {b} of them to a friend. How many {item} does {name} have left?"
        return Item(q, a - b, {"op": "-", "a": a, "b": b, "template": kind})
    if kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"There are {a} bags with {b} {item} in each bag. How many {item} are there in total?"
        return Item(q, a * b, {"op": "*", "a": a, "b": b, "template": kind})
    if kind == 3:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"{name} reads {a} pages every day for {b} days. How many pages does {name} read in all?"
        return Item(q, a * b, {"op": "*", "a": a, "b": b, "template": kind})
    a = rng.randint(5, 20)
    b = rng.randint(1, a - 1)
    q = f"A shelf holds {a} {item}. {name} takes {b} of them away. How many {item} are left on the shelf?"
    return Item(q, a - b, {"op": "-", "a": a, "b": b, "template": kind})


# --- code families -------------------------------------------------------------------------------------
# Each one: a one-line function to write. `_code_item` builds the question, the starter code, one assert
# test (several asserts) from fixed inputs, and the reference solution.

_NUM_ARGS = ["n", "x", "num", "value"]
_PAIR_ARGS = [("a", "b"), ("x", "y"), ("m", "n"), ("p", "q")]
_LIST_ARGS = ["nums", "numbers", "values", "xs", "items"]
_STR_ARGS = ["s", "text", "word", "string"]


def _code_item(name: str, args: str, task: str, calls: list[tuple[str, object]], body: str,
               meta: dict) -> Item:
    """`task` completes "Write a Python function `name(args)` that ..."; `calls` are (argument text,
    expected value) pairs for the asserts; `body` is the reference solution's return expression."""
    question = f"Write a Python function `{name}({args})` that {task}"
    starter = f"def {name}({args}):"
    asserts = "".join(f"\n    assert candidate({call}) == {expected!r}" for call, expected in calls)
    tests = ({"type": "assert", "code": f"def check(candidate):{asserts}\n", "entry_point": name},)
    solution = f"```python\n{starter}\n    return {body}\n```"
    return Item(question, "", {"name": name, "args": args, "starter_code": starter, **meta},
                domain="code", tests=tests, solution=solution)


def _code_add_const(rng: random.Random) -> Item:
    k = rng.randint(1, 30)
    x = rng.choice(_NUM_ARGS)
    name = rng.choice([f"add_{k}", f"plus_{k}", "increase", "shift_up", "add_constant"])
    task = rng.choice([f"returns {x} plus {k}.", f"adds {k} to {x} and returns the result.",
                       f"returns the number {x} increased by {k}."])
    calls = [(str(v), v + k) for v in (0, 1, 5, -3, 100)]
    return _code_item(name, x, task, calls, f"{x} + {k}", {"kind": "add_const", "k": k})


_ARITH2 = {
    "+": (["add", "plus", "sum_two", "add_numbers"],
          ["returns the sum of {a} and {b}.", "returns {a} plus {b}.", "adds {a} and {b} and returns the result."],
          lambda a, b: a + b),
    "-": (["subtract", "minus", "difference"],
          ["returns {a} minus {b}.", "subtracts {b} from {a} and returns the result."],
          lambda a, b: a - b),
    "*": (["multiply", "times", "product", "mul"],
          ["returns the product of {a} and {b}.", "returns {a} times {b}.", "multiplies {a} by {b} and returns the result."],
          lambda a, b: a * b),
}


def _code_arith2(rng: random.Random) -> Item:
    op = rng.choice(sorted(_ARITH2))
    names, tasks, fn = _ARITH2[op]
    a, b = rng.choice(_PAIR_ARGS)
    name = rng.choice(names)
    task = rng.choice(tasks).format(a=a, b=b)
    calls = [(f"{u}, {v}", fn(u, v)) for u, v in ((2, 3), (0, 7), (-4, 5), (10, 10), (6, -2))]
    return _code_item(name, f"{a}, {b}", task, calls, f"{a} {op} {b}", {"kind": op})


def _code_larger(rng: random.Random) -> Item:
    kind = rng.choice(["max", "min"])
    a, b = rng.choice(_PAIR_ARGS)
    if kind == "max":
        name = rng.choice(["larger", "bigger", "max_of_two", "maximum", "greater"])
        task = rng.choice([f"returns the larger of {a} and {b}.", f"returns whichever of {a} and {b} is larger.",
                           f"returns the maximum of the two numbers {a} and {b}."])
    else:
        name = rng.choice(["smaller", "min_of_two", "minimum", "lesser"])
        task = rng.choice([f"returns the smaller of {a} and {b}.", f"returns whichever of {a} and {b} is smaller.",
                           f"returns the minimum of the two numbers {a} and {b}."])
    fn = max if kind == "max" else min
    calls = [(f"{u}, {v}", fn(u, v)) for u, v in ((3, 5), (9, 2), (-1, -7), (4, 4), (0, -3))]
    return _code_item(name, f"{a}, {b}", task, calls, f"{kind}({a}, {b})", {"kind": kind})


def _code_divisible(rng: random.Random) -> Item:
    x = rng.choice(_NUM_ARGS)
    kind = rng.choice(["even", "odd", "multiple"])
    if kind == "even":
        k, name = 2, rng.choice(["is_even", "even", "check_even"])
        task = rng.choice([f"returns True if {x} is even and False otherwise.", f"returns whether the integer {x} is even."])
        body = f"{x} % 2 == 0"
    elif kind == "odd":
        k, name = 2, rng.choice(["is_odd", "odd", "check_odd"])
        task = rng.choice([f"returns True if {x} is odd and False otherwise.", f"returns whether the integer {x} is odd."])
        body = f"{x} % 2 == 1"
    else:
        k = rng.randint(3, 9)
        name = rng.choice([f"divisible_by_{k}", f"is_multiple_of_{k}"])
        task = rng.choice([f"returns True if {x} is divisible by {k} and False otherwise.",
                           f"returns whether the integer {x} is a multiple of {k}."])
        body = f"{x} % {k} == 0"
    inputs = sorted({0, 1, 7, 10, k, k + 1, 2 * k, 3 * k + 2})
    calls = [(str(v), (v % k == 0) != (kind == "odd")) for v in inputs]
    return _code_item(name, x, task, calls, body, {"kind": kind, "k": k})


def _code_list_sum(rng: random.Random) -> Item:
    xs = rng.choice(_LIST_ARGS)
    name = rng.choice(["total", "list_sum", "sum_list", "add_all", "sum_of"])
    task = rng.choice([f"returns the sum of the numbers in the list {xs}.",
                       f"adds up all the numbers in the list {xs} and returns the total.",
                       f"returns the total of the list {xs} (0 for an empty list)."])
    calls = [(repr(v), sum(v)) for v in ([1, 2, 3], [], [5], [-2, 2, 10], [4, 4, 4, 4])]
    return _code_item(name, xs, task, calls, f"sum({xs})", {"kind": "sum"})


def _code_list_end(rng: random.Random) -> Item:
    xs = rng.choice(_LIST_ARGS)
    kind = rng.choice(["first", "last"])
    if kind == "first":
        name = rng.choice(["first", "first_item", "head", "get_first", "first_element"])
        index = 0
    else:
        name = rng.choice(["last", "last_item", "get_last", "last_element", "final_item"])
        index = -1
    task = rng.choice([f"returns the {kind} element of the list {xs}.", f"returns the {kind} item in the non-empty list {xs}."])
    calls = [(repr(v), v[index]) for v in ([1, 2, 3], ["a", "b"], [7], [0, -1, 5, 9])]
    return _code_item(name, xs, task, calls, f"{xs}[{index}]", {"kind": kind})


def _code_abs(rng: random.Random) -> Item:
    x = rng.choice(_NUM_ARGS)
    name = rng.choice(["absolute", "abs_value", "magnitude", "distance_from_zero", "make_positive"])
    task = rng.choice([f"returns the absolute value of {x}.", f"returns {x} without its sign (the absolute value).",
                       f"returns the distance of the number {x} from zero."])
    calls = [(str(v), abs(v)) for v in (-5, 3, 0, -12, 7)]
    return _code_item(name, x, task, calls, f"abs({x})", {"kind": "abs"})


def _code_reverse_str(rng: random.Random) -> Item:
    s = rng.choice(_STR_ARGS)
    name = rng.choice(["reverse", "reversed_text", "flip", "backwards", "reverse_string"])
    task = rng.choice([f"returns the string {s} reversed.", f"returns the characters of {s} in reverse order.",
                       f"returns {s} written backwards."])
    calls = [(repr(v), v[::-1]) for v in ("abc", "", "a", "hello", "ab cd")]
    return _code_item(name, s, task, calls, f"{s}[::-1]", {"kind": "reverse"})


def _code_count_char(rng: random.Random) -> Item:
    s = rng.choice(_STR_ARGS)
    c = rng.choice("abcdeghiklmnoprstuwxyz")  # no "f": the filler letter below must differ
    name = rng.choice([f"count_{c}", f"how_many_{c}", f"count_letter_{c}", "count_letter"])
    task = rng.choice([f"returns how many times the letter '{c}' appears in the string {s}.",
                       f"returns the number of '{c}' characters in {s}.", f"counts the letter '{c}' in {s}."])
    calls = [(repr(v), v.count(c)) for v in ("", c, f"f{c}f{c}", "fff", f"{c}{c}{c}f")]
    return _code_item(name, s, task, calls, f"{s}.count({c!r})", {"kind": "count", "char": c})


def _code_case(rng: random.Random) -> Item:
    s = rng.choice(_STR_ARGS)
    kind = rng.choice(["upper", "lower"])
    if kind == "upper":
        name = rng.choice(["shout", "to_upper", "upper_case", "make_upper", "all_caps"])
        task = rng.choice([f"returns the string {s} in upper case.", f"returns {s} with every letter capitalized.",
                           f"converts {s} to uppercase letters and returns it."])
        values = ("abc", "Hello World", "", "a1b2")
    else:
        name = rng.choice(["to_lower", "lower_case", "make_lower", "whisper", "no_caps"])
        task = rng.choice([f"returns the string {s} in lower case.", f"returns {s} with every letter in lower case.",
                           f"converts {s} to lowercase letters and returns it."])
        values = ("ABC", "Hello World", "", "A1B2")
    calls = [(repr(v), getattr(v, kind)()) for v in values]
    return _code_item(name, s, task, calls, f"{s}.{kind}()", {"kind": kind})


FAMILIES: dict[str, Callable[[random.Random], Item]] = {
    "add_1digit": _add_1digit,
    "mul_1digit": _mul_1digit,
    "add_2digit_nocarry": _add_2digit_nocarry,
    "word_1step": _word_1step,
    "code_add_const": _code_add_const,
    "code_arith2": _code_arith2,
    "code_larger": _code_larger,
    "code_divisible": _code_divisible,
    "code_list_sum": _code_list_sum,
    "code_list_end": _code_list_end,
    "code_abs": _code_abs,
    "code_reverse_str": _code_reverse_str,
    "code_count_char": _code_count_char,
    "code_case": _code_case,
}
MATH_FAMILIES = tuple(f for f in FAMILIES if not f.startswith("code_"))
CODE_FAMILIES = tuple(f for f in FAMILIES if f.startswith("code_"))


def problem_id_for(family: str, question: str) -> str:
    """`gen-<family>-<8 hex of the question>`: the same question has the same id whatever the seed."""
    digest = hashlib.blake2b(question.encode(), digest_size=4).hexdigest()
    return f"gen-{family}-{digest}"


def generate_problems(
    families: list[str], per_family: int, seed: int, exclude: Collection[str] = ()
) -> list[dict]:
    """`per_family` distinct problems per family, as rows with the `schema.PROBLEM_SCHEMA` columns.

    Deterministic in (`families`, `per_family`, `seed`): each family draws from its own RNG seeded with
    the seed and the family name, so adding a family does not change the others. `exclude` holds problem
    ids (or question texts) that must not appear, e.g. a training split when generating a held-out one.
    Raises ValueError for an unknown family or when a family has fewer distinct questions than asked.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown problem families {unknown}; known: {sorted(FAMILIES)}")
    if per_family < 0:
        raise ValueError(f"per_family must be >= 0, got {per_family}")
    excluded = set(exclude)
    rows: list[dict] = []
    for family in families:
        rng = random.Random(f"{seed}:{family}")
        seen: set[str] = set()
        attempts = 0
        # Rejection sampling for distinct questions; the budget bounds the loop on small spaces
        # (1-digit families have only 81 questions).
        while len(seen) < per_family:
            attempts += 1
            if attempts > 200 * per_family + 1000:
                raise ValueError(
                    f"family {family!r} gave only {len(seen)} distinct questions (asked {per_family}, "
                    f"{len(excluded)} excluded): ask for fewer per family"
                )
            item = FAMILIES[family](rng)
            pid = problem_id_for(family, item.question)
            if pid in seen or pid in excluded or item.question in excluded:
                continue
            seen.add(pid)
            rows.append(
                {
                    S.PROBLEM_ID: pid,
                    S.DOMAIN: item.domain,
                    S.QUESTION: item.question,
                    S.ANSWER: str(item.answer),
                    S.TESTS: json.dumps(list(item.tests)) if item.tests else "",
                    S.SOURCE: SOURCE_NAME,
                    S.META: json.dumps({"family": family, **item.meta}, sort_keys=True),
                }
            )
    return rows
