"""Small synthetic SFT corpora in CORPUS_SCHEMA: for smoke runs, tests and the training benchmark.

`arithmetic_corpus` is the shape of the demo's real corpus (a user question, a short worked answer ending in
\\boxed{}). `length_mix_corpus` pads answers with worked steps so sample lengths follow a given token-length
distribution (e.g. the real reasoning traces' lengths scaled down), which is what packing is about.
"""

from __future__ import annotations

import json
import random
from typing import Sequence

import pandas as pd

from ded_ray import schema as S


def _row(i: int, question: str, answer: str, system: str | None = None) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    return {
        S.MESSAGES: messages,
        S.PROBLEM_ID: f"synthetic-{i}",
        S.ROLLOUT_ID: f"synthetic-{i}#synthetic#0",
        S.DOMAIN: "math",
        S.SOURCE: "synthetic",
        S.TEACHER: "synthetic",
        S.SEED: i,
        S.SAMPLING: json.dumps({}),
        S.VERDICT: "correct",
        S.PASS_RATE: 0.0,
        S.DIVERSITY_MIN_DISTANCE: 1.0,
        S.NUM_TOKENS: 0,
    }


def arithmetic_corpus(n: int, seed: int = 0, system: str | None = None) -> pd.DataFrame:
    """`n` rows of "What is a + b?" -> "a + b = c. The answer is \\boxed{c}." (1-digit operands)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append(_row(i, f"What is {a} + {b}?", f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}.", system))
    return pd.DataFrame(rows)


# With the SmolLM2 tokenizer and chat template (default system prompt included): measured on this corpus.
CHAT_OVERHEAD_TOKENS = 52
TOKENS_PER_STEP = 12


def length_mix_corpus(token_lengths: Sequence[int], seed: int = 0) -> pd.DataFrame:
    """One row per requested length: an arithmetic question whose answer is a chain of worked additions,
    about `length` tokens long in total with the SmolLM2 tokenizer (within a step, ~12 tokens)."""
    rng = random.Random(seed)
    rows = []
    for i, length in enumerate(token_lengths):
        total = rng.randint(0, 9)
        steps = [f"Start with {total}."]
        for _ in range(max(1, (int(length) - CHAT_OVERHEAD_TOKENS) // TOKENS_PER_STEP)):
            x = rng.randint(1, 9)
            steps.append(f"{total} + {x} = {total + x}.")
            total += x
        rows.append(_row(i, f"Add up the chain starting from {steps[0].split()[-1][:-1]}.",
                         " ".join(steps) + f" The answer is \\boxed{{{total}}}."))
    return pd.DataFrame(rows)

