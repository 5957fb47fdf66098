"""open-r1/codeforces rows, through the `ded prepare codeforces` converter (one conversion, two ways in).

`prepare/codeforces.py` decides which problems an exact output match can judge and builds the statement;
this preset calls it on each row, so a downloaded parquet loads as it is. Its rejections keep their reasons:
`needs_checker` (interactive, or any of several outputs is right: never exact-matched), `file_io`,
`not_executable`, and `missing_tests` / `missing_question` (its `no_tests` / `missing_question`).

Meta: `time_limit_s` (seconds per test) and `memory_limit_mb`, the two keys the code verifier reads for
per-problem limits, plus `rating`, `tags`, `contest_name`, `official_tests_complete`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ded_ray.prepare import codeforces as cf
from ded_ray.prepare.base import Reject, SourceRow
from ded_ray.presets.base import Preset, PresetReject, require

NAME = "codeforces"
# The converter's reasons, as the reader names them.
REASONS = {cf.NEEDS_CHECKER: "needs_checker", cf.FILE_IO: "file_io", cf.NOT_EXECUTABLE: "not_executable",
           cf.NO_TESTS: "missing_tests", cf.MISSING_QUESTION: "missing_question"}


def convert(row: dict[str, Any]) -> dict[str, Any]:
    require(row, cf.REQUIRED, NAME)
    converted = cf.convert(SourceRow(row, Path(""), 0, 0))  # it reads only `data`; asks why_not_exact_match first
    if isinstance(converted, Reject):
        raise PresetReject(REASONS[converted.reason], converted.detail)
    converted = dict(converted)
    ours = {key: converted.pop(key) for key in ("problem_id", "question", "tests")}
    return {**ours, "answer": "", "meta": converted}


PRESET = Preset(
    name=NAME,
    description="Codeforces stdin/stdout problems with official tests (open-r1/codeforces rows)",
    convert=convert,
    reasons=("needs_checker", "file_io", "not_executable"),
)
