"""Codeforces (open-r1/codeforces, train split): stdin/stdout problems with their official tests.

Source columns (dataset card, default config): `id`, `contest_name`, `title`, `time_limit` (s), `memory_limit`
(MB), `description`, `input_format`, `output_format`, `interaction_format`, `note`, `examples` and
`official_tests` (lists of {input, output}), `rating`, `tags`, `official_tests_complete`, `input_mode`
("stdio" | "file"), `generated_checker` (a Python checker, for problems whose output is not unique),
`executable`, plus editorials and contest fields this converter does not read. open-r1 itself grades with
the checker whenever `generated_checker` is set (`open_r1/utils/competitive_programming/cf_scoring.py`).

ded_ray's code verifier compares printed output with the expected output, so only problems where that
comparison is the judge are kept. Rejected (counted, written beside the output):
- `needs_checker`: interactive (`interaction_format` set: an interactor plays the judge) or judged by a
  checker (`generated_checker` set: many outputs are correct);
- `file_io`: reads input.txt / writes output.txt instead of stdin/stdout;
- `not_executable`: the dataset marks the problem as not runnable;
- `no_tests`: no official tests.

Output row: `problem_id` (the Codeforces id), `question` (statement, limits, formats, examples, note),
`tests` (ded_ray's native stdin tests: [{"type": "stdin", "input", "output"}], read with
`tests_format: native`), and `time_limit_s`, `memory_limit_mb`, `rating`, `tags`, `contest_name`,
`official_tests_complete` (kept in the problem's `meta` by the reader).
"""

from __future__ import annotations

from typing import Any

from ded_ray.prepare.base import Converter, HubDataset, Reject, SourceRow, as_text

HUB = HubDataset("open-r1/codeforces", ("data/train-*.parquet",))

NEEDS_CHECKER = "needs_checker"
FILE_IO = "file_io"
NOT_EXECUTABLE = "not_executable"
NO_TESTS = "no_tests"
MISSING_QUESTION = "missing_question"

READ_COLUMNS = ("id", "contest_name", "title", "time_limit", "memory_limit", "description", "input_format",
                "output_format", "interaction_format", "note", "examples", "rating", "tags", "official_tests",
                "official_tests_complete", "input_mode", "generated_checker", "executable")
REQUIRED = ("id", "title", "description", "time_limit", "memory_limit", "official_tests", "interaction_format",
            "input_mode", "generated_checker")


def convert(row: SourceRow) -> dict | Reject:
    data = row.data
    problem_id = as_text(data.get("id"))
    reason = why_not_exact_match(data)
    if reason is not None:
        return reason
    tests = [{"type": "stdin", "input": t.get("input") or "", "output": t.get("output") or ""}
             for t in data.get("official_tests") or [] if isinstance(t, dict)]
    if not tests:
        return Reject(NO_TESTS, f"{problem_id}: no official tests")
    if not as_text(data.get("description")):
        return Reject(MISSING_QUESTION, f"{problem_id}: empty statement")
    return {
        "problem_id": problem_id,
        "question": statement(data),
        "tests": tests,
        "time_limit_s": data.get("time_limit"),
        "memory_limit_mb": data.get("memory_limit"),
        "rating": data.get("rating"),
        "tags": list(data.get("tags") or []),
        "contest_name": as_text(data.get("contest_name")),
        "official_tests_complete": data.get("official_tests_complete"),
    }


def why_not_exact_match(data: dict[str, Any]) -> Reject | None:
    """The reason comparing printed output with the official output would misjudge this problem, if any."""
    problem_id = as_text(data.get("id"))
    if as_text(data.get("interaction_format")):
        return Reject(NEEDS_CHECKER, f"{problem_id}: interactive (an interactor judges it)")
    if as_text(data.get("generated_checker")):
        return Reject(NEEDS_CHECKER, f"{problem_id}: output judged by a checker (more than one answer is correct)")
    mode = as_text(data.get("input_mode")) or "stdio"
    if mode != "stdio":
        return Reject(FILE_IO, f"{problem_id}: input_mode {mode!r} (files, not stdin/stdout)")
    if data.get("executable") is False:
        return Reject(NOT_EXECUTABLE, f"{problem_id}: the dataset marks it not executable")
    return None


def statement(data: dict[str, Any]) -> str:
    """The problem as a contestant reads it (the layout of open-r1's codeforces-cots prompts, without
    their language instructions: the teacher's prompt says how to answer)."""
    limits = (f"Time limit per test: {_amount(data.get('time_limit'), 'second')}\n"
              f"Memory limit per test: {_amount(data.get('memory_limit'), 'megabyte')}")
    parts = [f"# {as_text(data.get('title'))}", limits, as_text(data.get("description"))]
    for heading, key in (("Input Format", "input_format"), ("Output Format", "output_format")):
        if as_text(data.get(key)):
            parts.append(f"## {heading}\n{as_text(data.get(key))}")
    examples = [e for e in data.get("examples") or [] if isinstance(e, dict)]
    if examples:
        shown = "\n\n".join(f"### Input\n```\n{_block(e.get('input'))}\n```\n### Output\n```\n"
                            f"{_block(e.get('output'))}\n```" for e in examples)
        parts.append(f"## Examples\n{shown}")
    if as_text(data.get("note")):
        parts.append(f"## Note\n{as_text(data.get('note'))}")
    return "\n\n".join(parts)


def _amount(value: Any, unit: str) -> str:
    """"2 seconds", "1 second", "256 megabytes"."""
    if not isinstance(value, (int, float)):
        return f"{as_text(value) or '?'} {unit}s"
    return f"{value:g} {unit}" + ("" if value == 1 else "s")


def _block(text: Any) -> str:
    return (text or "").rstrip("\n")


CONVERTER = Converter(
    name="codeforces",
    description="Codeforces stdin/stdout problems with official tests (open-r1/codeforces)",
    hub=HUB,
    required=REQUIRED,
    read_columns=READ_COLUMNS,
    convert=convert,
    reasons=(NEEDS_CHECKER, FILE_IO, NOT_EXECUTABLE, NO_TESTS, MISSING_QUESTION),
)
