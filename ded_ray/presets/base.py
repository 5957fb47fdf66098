"""What every preset shares: the preset itself, its rejection, and the checks on a raw row.

A preset maps one row in a benchmark's own published format to our columns, so that file loads as it was
downloaded (`format: livecodebench` …) instead of through a hand-written column map that only fits a
pre-converted copy. The reader (io.py) validates the result like any other row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class PresetReject(Exception):
    """This raw row is not of the preset's shape (or cannot be judged by us); io.py records it as rejected."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Preset:
    """One `format:` name: how a raw row of that benchmark becomes a problem.

    `convert(row)` returns {problem_id (None: io hashes the question), question, answer, tests (our native
    test dicts), meta (a dict)} or raises `PresetReject`. `reasons` lists every reason it may reject for
    beyond io.py's own (the `problems` stage declares them all).
    """

    name: str
    description: str
    convert: Callable[[dict[str, Any]], dict[str, Any]]
    reasons: tuple[str, ...] = ()
    domain: str = "code"  # the source's domain unless it sets `domain:` itself


def require(row: dict[str, Any], fields: tuple[str, ...], preset: str) -> None:
    """Reject a row that lacks one of the preset's fields, naming it (the usual sign of a wrong `format:`)."""
    absent = [f for f in fields if f not in row]
    if absent:
        raise PresetReject("missing_column", f"not a {preset} row: it lacks {', '.join(map(repr, absent))}")


def text(row: dict[str, Any], field: str, preset: str, *, empty_ok: bool = False) -> str:
    """A field that must be text (non-empty unless `empty_ok`); None counts as empty."""
    value = row.get(field)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise PresetReject("wrong_type", f"{preset} field {field!r} must be text, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise PresetReject("missing_question" if field in QUESTION_FIELDS else "wrong_type",
                           f"{preset} field {field!r} is empty")
    return value


# Fields that hold the question text in some preset: empty means `missing_question`, as io.py says it.
QUESTION_FIELDS = ("question_content", "prompt", "problem", "description")
