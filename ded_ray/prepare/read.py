"""Stream the rows of a source's files (parquet, jsonl, or one JSON array) and check their columns first.

Parquet is read in small record batches and only the columns a converter asks for, so a multi-GB source
(open-r1/codeforces with its official tests) never sits in memory whole. A jsonl line that is not JSON is
handed on as a `Reject` (`invalid_json`), like any other row that cannot be converted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from ded_ray.errors import UserError
from ded_ray.prepare.base import Reject, SourceRow

PARQUET_BATCH_ROWS = 16  # Codeforces rows can hold megabytes of tests each
INVALID_JSON = "invalid_json"


def iter_rows(files: list[Path], required: tuple[str, ...],
              read_columns: tuple[str, ...] | None = None) -> Iterator[SourceRow | tuple[Reject, SourceRow]]:
    """Every row of `files` in order; a `(Reject, row)` pair for a line that could not be parsed."""
    index = 0
    for path in files:
        for index_in_file, item in enumerate(_file_rows(path, required, read_columns)):
            if isinstance(item, Reject):
                yield item, SourceRow({}, path, index_in_file, index)
            else:
                yield SourceRow(item, path, index_in_file, index)
            index += 1


def _file_rows(path: Path, required: tuple[str, ...], read_columns: tuple[str, ...] | None):
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, required, read_columns)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path, required)
    elif suffix == ".json":
        yield from _json_array_rows(path, required)
    else:
        raise UserError(f"{path}: cannot read a {suffix or 'suffix-less'} file; expected .parquet, .jsonl or .json")


def check_columns(path: Path, columns: list[str], required: tuple[str, ...]) -> None:
    """Raise a UserError naming every required column `path` lacks ("a|b": either name will do)."""
    missing = [need.replace("|", " (or ") + (")" if "|" in need else "")
               for need in required if not any(name in columns for name in need.split("|"))]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; it has {sorted(columns)}. "
                        "Is it the right dataset file? (`ded prepare --help` lists each source)")


def _parquet_rows(path: Path, required, read_columns):
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    check_columns(path, names, required)
    wanted = None if read_columns is None else [c for c in read_columns if c in names]
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
        yield from batch.to_pylist()


def _jsonl_rows(path: Path, required):
    checked = False
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield Reject(INVALID_JSON, f"line {line_no}: {exc}")
                continue
            if not isinstance(row, dict):
                yield Reject(INVALID_JSON, f"line {line_no}: a row must be an object, got {type(row).__name__}")
                continue
            if not checked:
                check_columns(path, list(row), required)
                checked = True
            yield row


def _json_array_rows(path: Path, required):
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: a .json source must be one array of row objects")
    if rows:
        check_columns(path, list(rows[0]), required)
    yield from rows
