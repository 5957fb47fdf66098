"""Arithmetic problems generated from a seed: the embedded demo's data set.

No benchmark text: every question comes from a template in this file, with an exact integer answer. The
families were chosen for SmolLM2-135M (MEASURED.md): 1-digit addition and multiplication are in its reach
with many questions at a middle pass rate (what pass-rate compression and diversity selection need);
2-digit addition and one-step word problems are mostly out of reach (a hard held-out split).

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
    answer: int
    meta: dict


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


FAMILIES: dict[str, Callable[[random.Random], Item]] = {
    "add_1digit": _add_1digit,
    "mul_1digit": _mul_1digit,
    "add_2digit_nocarry": _add_2digit_nocarry,
    "word_1step": _word_1step,
}


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
                    S.DOMAIN: "math",
                    S.QUESTION: item.question,
                    S.ANSWER: str(item.answer),
                    S.TESTS: "",
                    S.SOURCE: SOURCE_NAME,
                    S.META: json.dumps({"family": family, **item.meta}, sort_keys=True),
                }
            )
    return rows
