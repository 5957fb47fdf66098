"""What every converter shares: a source row, a rejection, where a dataset lives, and the converter itself.

A converter turns one row of a public dataset, in that dataset's own columns, into one problem row in the
format `io.read_problems` reads for the matching `ded-32b.yaml` source entry, or into a `Reject` that says
why not (the row is then written beside the output with its reason, never dropped silently).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourceRow:
    """One row of a source file, with where it came from (some ids are derived from the file and position)."""

    data: dict[str, Any]
    file: Path
    index_in_file: int  # 0-based
    index: int  # 0-based over all files of the source, in file order


@dataclass(frozen=True)
class Reject:
    reason: str  # one of the converter's `reasons`
    detail: str


@dataclass(frozen=True)
class HubDataset:
    """A dataset repository on the Hugging Face Hub and the files of it a converter reads."""

    repo_id: str
    patterns: tuple[str, ...]  # `allow_patterns` globs relative to the repo root, e.g. "data/train-*.parquet"
    revision: str | None = None  # None: the main branch


@dataclass(frozen=True)
class Converter:
    """One `ded prepare NAME`: a source, the columns it must have, and the row conversion."""

    name: str
    description: str  # one line for `ded prepare --help` and the summary
    hub: HubDataset
    # Columns every source file must have; an entry "a|b" means "a or b" (two published copies name it
    # differently). Checked on each file before any row is converted, so a wrong file fails with the list.
    required: tuple[str, ...]
    convert: Callable[[SourceRow], dict | Reject]
    reasons: tuple[str, ...]  # every reason `convert` may reject a row for
    # Columns to read from parquet (the rest, e.g. Codeforces editorials, are never loaded); None = all.
    read_columns: tuple[str, ...] | None = None
    default_out: str = field(default="")  # default: data/<name>.jsonl

    @property
    def out_path(self) -> str:
        return self.default_out or f"data/{self.name}.jsonl"


def first_present(data: dict[str, Any], names: str) -> Any:
    """The value of the first of the "a|b" column names present in `data`, or None."""
    for name in names.split("|"):
        if name in data:
            return data[name]
    return None


def as_text(value: Any) -> str:
    """A source cell as stripped text: numbers become their decimal text, None becomes ""."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()
