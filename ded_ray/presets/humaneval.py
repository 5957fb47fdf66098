"""OpenAI HumanEval rows: {task_id, prompt, canonical_solution, test, entry_point}.

The question is the prompt (signature + docstring) and so is meta `starter_code`: the prompt stage then asks
for that function to be completed. Tests: `convert_tests(test, "humaneval", entry_point=...)`, i.e. the
official `check(candidate)` called on the entry point. Meta: `starter_code`, `entry_point`,
`canonical_solution` (the body only: the runnable program is prompt + canonical_solution).
"""

from __future__ import annotations

from typing import Any

from ded_ray.presets.base import Preset, PresetReject, require, text

NAME = "humaneval"
FIELDS = ("task_id", "prompt", "test", "entry_point")


def convert(row: dict[str, Any]) -> dict[str, Any]:
    require(row, FIELDS, NAME)
    prompt = text(row, "prompt", NAME)
    entry_point = text(row, "entry_point", NAME)
    test = text(row, "test", NAME)
    if "def check(" not in test:
        raise PresetReject("bad_tests", "humaneval `test` has no `def check(candidate)`")
    from ded_ray.verifiers.code import convert_tests

    meta = {"starter_code": prompt, "entry_point": entry_point}
    if isinstance(row.get("canonical_solution"), str):
        meta["canonical_solution"] = row["canonical_solution"]
    return {"problem_id": row["task_id"], "question": prompt, "answer": "",
            "tests": convert_tests(test, "humaneval", entry_point=entry_point), "meta": meta}


PRESET = Preset(
    name=NAME,
    description="HumanEval function-completion problems with their check() tests (openai/human-eval rows)",
    convert=convert,
)
