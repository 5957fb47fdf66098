"""rllm / DeepCoder LeetCode rows: {problem, solutions, tests: {"functional": "def check(candidate): ..."}}.

`problem` is rllm's prompt: an instruction line, the statement, then "Please complete the following python
code precisely:" and the starter code in a fence. The question is the statement alone and the starter code
goes to meta `starter_code`, so our prompt stage words the instructions the same way for every source (a
row of another layout keeps its whole text as the question). Tests: `convert_tests(..., "leetcode")`.

Rows carry no id: io.py names each by a hash of its question. Meta: `starter_code`, `reference_solution`
(rllm's `solutions`, or `reference_solution` in our converted copy).
"""

from __future__ import annotations

import re
from typing import Any

from ded_ray.presets.base import Preset, PresetReject, require, text

NAME = "leetcode"
_PROMPT = re.compile(
    r"\A(?:Please solve the programming task below[^\n]*\n+)?(?P<statement>.*?)\s*"
    r"\n[^\n]*Please complete the following python code precisely:\s*```python\n(?P<starter>.*?)```\s*\Z",
    re.DOTALL,
)


def convert(row: dict[str, Any]) -> dict[str, Any]:
    require(row, ("problem", "tests"), NAME)
    problem = text(row, "problem", NAME)
    from ded_ray.verifiers.code import convert_tests

    try:
        tests = convert_tests(row["tests"], "leetcode")
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise PresetReject("bad_tests", f"cannot convert leetcode tests: {exc}") from None
    layout = _PROMPT.match(problem)
    question, starter = (layout["statement"], layout["starter"].rstrip()) if layout else (problem, "")
    meta: dict[str, Any] = {"starter_code": starter}
    solution = row.get("solutions", row.get("reference_solution"))
    if isinstance(solution, str) and solution.strip():
        meta["reference_solution"] = solution
    return {"problem_id": None, "question": question, "answer": "", "tests": tests, "meta": meta}


PRESET = Preset(
    name=NAME,
    description="LeetCode problems with assert tests (rllm / DeepCoder test split rows)",
    convert=convert,
)
