"""s1K (simplescaling/s1K, 1,000 questions): the paper's math questions, with a real final answer each.

Source columns (dataset card; built by simplescaling/s1 `data/collect_data.py`): `question`, `solution`,
`cot_type`, `source_type`, `metadata` (the source row's other fields as a Python-dict `str()`), `cot`,
`thinking_trajectories` and `attempt` (Gemini's trace and answer: not gold, never used here).

`solution` is whatever the source dataset called its solution: a bare answer for some (AIME "204", JEEBench
"ABD", TheoremQA, SciEval, crosswords), a worked solution for others (MATH, NuminaMath, Omni-MATH), a proof
or nothing for the rest (s1-prob, LiveCodeBench, USACO). The gold answer is therefore taken, first rule
that gives one:
1. `metadata`: the source's own answer field (`answer`: Omni-MATH, MATH, OlympicArena; `final_answer`:
   OlympiadBench; `Answer`; `Correct Answer`: GPQA; `gold`);
2. the last `\\boxed{...}` of `solution`;
3. `solution` itself when it is a bare answer (one short line).
Otherwise the row is rejected (`no_final_answer`, with its `source_type`). `answer_from` records the rule.

Output row: `problem_id` (the row's index in s1K), `question`, `answer`, `answer_from`, `source_type`,
`cot_type` (domain is the config's: the paper counts all of s1K as math).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from ded_ray.prepare.base import Converter, HubDataset, Reject, SourceRow, as_text

HUB = HubDataset("simplescaling/s1K", ("data/train-*.parquet",))
METADATA_ANSWER_KEYS = ("answer", "final_answer", "Answer", "Correct Answer", "gold")
BARE_ANSWER_MAX_CHARS = 80  # longer (or multi-line) solutions are explanations, not answers

NO_FINAL_ANSWER = "no_final_answer"
MISSING_QUESTION = "missing_question"


def convert(row: SourceRow) -> dict | Reject:
    data = row.data
    question = as_text(data.get("question"))
    source_type = as_text(data.get("source_type"))
    if not question:
        return Reject(MISSING_QUESTION, f"empty question ({source_type})")
    answer, answer_from = final_answer(data.get("solution"), data.get("metadata"))
    if answer is None:
        return Reject(NO_FINAL_ANSWER, f"{source_type}: no answer field in metadata, no \\boxed{{}} in the "
                      "solution, and the solution is not a bare answer")
    return {
        "problem_id": str(row.index),
        "question": question,
        "answer": answer,
        "answer_from": answer_from,
        "source_type": source_type,
        "cot_type": as_text(data.get("cot_type")),
    }


def final_answer(solution: Any, metadata: Any) -> tuple[str | None, str]:
    """(answer, the rule that gave it) or (None, "") — the rules of the module docstring, in order."""
    fields = parse_metadata(metadata)
    for key in METADATA_ANSWER_KEYS:
        answer = _answer_text(fields.get(key))
        if answer:
            return answer, f"metadata:{key}"
    # imported here, not at the top: `ded --help` imports this module, and that should stay instant
    from ded_ray.verifiers.math import extract_answer

    text = as_text(solution)
    if "\\boxed" in text or "\\fbox" in text:
        boxed = extract_answer(text)  # a solution has no </think>: the last box of the whole text
        if boxed:
            return boxed, "boxed"
    if text and "\n" not in text and len(text) <= BARE_ANSWER_MAX_CHARS:
        return _unwrap_math(text), "solution"
    return None, ""


def parse_metadata(metadata: Any) -> dict:
    """s1K's `metadata` (a Python-dict `str()`, sometimes JSON) as a dict; {} when it is neither."""
    if isinstance(metadata, dict):
        return metadata
    if not isinstance(metadata, str) or not metadata.strip():
        return {}
    # str() of a row with a missing float holds a bare `nan`, which is not a Python literal
    without_nan = re.sub(r"(?<=[:\[,] )nan(?=[,}\]])", "None", metadata)
    for parse, text in ((ast.literal_eval, metadata), (ast.literal_eval, without_nan), (json.loads, metadata)):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return {}


def _unwrap_math(answer: str) -> str:
    """"$3$" -> "3": a gold answer is stored without math delimiters (as a boxed one is)."""
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right):
            inner = answer[len(left): -len(right)]
            if left not in inner and right not in inner:  # not "$a$ and $b$"
                return inner.strip()
    return answer


def _answer_text(value: Any) -> str:
    """A metadata answer as text: lists (OlympiadBench, OlympicArena) joined with ", " ("$3$" items -> "3")."""
    if isinstance(value, (list, tuple)):
        parts = [_answer_text(v) for v in value]
        return ", ".join(p for p in parts if p)
    return _unwrap_math(as_text(value))


CONVERTER = Converter(
    name="s1k",
    description="s1K math questions (simplescaling/s1K) with their final answers",
    hub=HUB,
    required=("question", "solution", "source_type", "metadata"),
    read_columns=("question", "solution", "source_type", "metadata", "cot_type"),
    convert=convert,
    reasons=(MISSING_QUESTION, NO_FINAL_ANSWER),
)
