"""Problem readers: jsonl, parquet and saved `datasets` folders, with a column mapping.

`read_problems(source)` returns `(problems, rejected)`: two DataFrames. Valid rows have exactly the
columns of `schema.PROBLEM_SCHEMA`; every invalid row (undecodable text, bad JSON, missing question, wrong
types, empty math answer, code without tests, duplicate id) is in `rejected` with `reject_reason` and
`reject_detail` — nothing is dropped silently and nothing crashes the read. Every non-blank line (or
parquet row) is one input row, so a source's input rows = problems + rejected, by reason.

A `.json` file holds one JSON array of rows (pretty-printed or not) or JSON lines; a folder of files (not a
saved `datasets` folder) is read file by file, each by its suffix (`.jsonl` / `.ndjson` / `.json` /
`.parquet`), in name order, its rejects' details prefixed with the file name. A folder with any other file
is refused, naming it: nothing in it is skipped unseen.

A preset `format:` (livecodebench, codeforces, leetcode, humaneval: `ded_ray/presets/`) reads the file as
`auto` does and maps each row from that benchmark's own columns to ours first; explicit `columns:` still win.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ded_ray import schema as S
from ded_ray.config import ProblemSource
from ded_ray.errors import UserError
from ded_ray.presets import REASONS as PRESET_REASONS
from ded_ray.presets import Preset, PresetReject, get_preset
from ded_ray.verifiers.registry import DOMAINS, domain_spec

# Where our columns are usually found when the source names them differently (first match wins).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    S.PROBLEM_ID: ("problem_id", "unique_id", "question_id", "task_id", "id", "idx"),
    S.QUESTION: ("question", "problem", "prompt"),
    S.ANSWER: ("answer", "gold", "gt_answer", "final_answer"),
    S.TESTS: ("tests", "test", "test_cases"),
}

RAW_ROW = "raw"  # rejected rows keep the source row (as JSON text) under this column
# Every reason a problem row can be rejected for (the plan's `problems` stage declares them).
READ_REASONS = ("undecodable", "invalid_json", "wrong_type", "missing_column", "missing_question", "bad_domain",
                "missing_answer", "missing_tests", "bad_tests", "duplicate_id") + PRESET_REASONS


class ProblemReadError(UserError, ValueError):
    """The source as a whole cannot be read (missing file, unknown format); names the source."""


def read_problems(source: ProblemSource) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate one problem source; see the module docstring for the contract."""
    name = source.name or (Path(source.path).stem if source.path else "generated")
    if source.generated is not None:
        from ded_ray.generated import generate_problems

        g = source.generated
        excluded = {q for other in g.exclude for q in read_problems(other)[0][S.QUESTION]}
        rows = generate_problems(g.families, g.per_family, g.seed, exclude=excluded)
        raw_rows = ((i, row, None) for i, row in enumerate(rows))
    else:
        raw_rows = _raw_rows(source)

    good, bad, seen = [], [], set()
    for line_no, raw, file in raw_rows:
        if source.limit is not None and len(good) >= source.limit:
            break

        def reject(text: str, reason: str, detail: str) -> None:
            bad.append(_rejected(name, line_no, text, reason, f"{file}: {detail}" if file else detail))

        if isinstance(raw, _BadRow):
            reject(raw.text, raw.reason, raw.detail)
            continue
        try:
            row = _to_problem(raw, source, name)
        except _Invalid as exc:
            reject(_as_text(raw), exc.reason, exc.detail)
            continue
        if row[S.PROBLEM_ID] in seen:
            reject(_as_text(raw), "duplicate_id", row[S.PROBLEM_ID])
            continue
        seen.add(row[S.PROBLEM_ID])
        good.append(row)

    problems = pd.DataFrame(good, columns=S.PROBLEM_SCHEMA.names)
    rejected = pd.DataFrame(
        bad, columns=[S.SOURCE, "line", RAW_ROW, S.REJECT_STAGE, S.REJECT_REASON, S.REJECT_DETAIL]
    )
    return problems, rejected


def read_all_problems(sources: list[ProblemSource]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All sources concatenated; a problem id repeated across sources is rejected as a duplicate."""
    frames, rejects = [], []
    for source in sources:
        problems, rejected = read_problems(source)
        frames.append(problems)
        rejects.append(rejected)
    problems = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=S.PROBLEM_SCHEMA.names)
    rejected = pd.concat(rejects, ignore_index=True)
    dup = problems[S.PROBLEM_ID].duplicated()
    if dup.any():
        extra = problems[dup]
        rejected = pd.concat(
            [rejected, pd.DataFrame([
                _rejected(r[S.SOURCE], -1, json.dumps(r), "duplicate_id", r[S.PROBLEM_ID])
                for r in extra.to_dict("records")
            ])],
            ignore_index=True,
        )
        problems = problems[~dup].reset_index(drop=True)
    return problems, rejected


# --- raw rows ------------------------------------------------------------------------------------------


class _BadRow:
    def __init__(self, text: str, reason: str, detail: str):
        self.text, self.reason, self.detail = text, reason, detail


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


RawRows = Iterator[tuple[int, Any, str | None]]  # (line or row number, the row or a _BadRow, file in a folder)
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def _raw_rows(source: ProblemSource) -> RawRows:
    path = Path(source.path).expanduser()
    if not path.exists():
        raise ProblemReadError(f"problem source {source.path!r} does not exist")
    chosen = "auto" if get_preset(source.format) else source.format  # a preset's file is read by its suffix
    fmt = chosen
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt == "datasets":
        return ((i, row, None) for i, row in enumerate(_saved_dataset_table(path, source.split).to_pylist()))
    if fmt not in ("jsonl", "parquet"):
        raise ProblemReadError(f"problem source {source.path!r}: unknown format {fmt!r}")
    if not path.is_dir():
        return ((i, row, None) for i, row in _file_rows(path, fmt))
    return _folder_rows(path, None if chosen == "auto" else fmt)


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return "datasets"
        return "jsonl"  # a folder of files: each is read by its own suffix (`_folder_rows`)
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ProblemReadError(
            f"cannot tell the format of {path}: set `format:` to jsonl, parquet or datasets in its source"
        )
    return fmt


def _folder_rows(folder: Path, fmt: str | None) -> RawRows:
    """Every file of a folder by its suffix (or `fmt` when the source names one); hidden and `_` files
    (`.DS_Store`, `_SUCCESS`) are not data. Refused whole when a file has no known format."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    parquet_only = all(p.suffix.lower() == ".parquet" for p in files)
    if fmt == "parquet" or (fmt is None and parquet_only and (files or any(folder.iterdir()))):
        # a parquet dataset, partitioned folders included: pyarrow reads it whole
        yield from ((i, row, None) for i, row in enumerate(pq.read_table(folder).to_pylist()))
        return
    unknown = [p.name for p in files if fmt is None and p.suffix.lower() not in _SUFFIX_FORMATS]
    if unknown:
        raise ProblemReadError(
            f"problem source {str(folder)!r} holds files of no known format: {', '.join(unknown)}. Fix: keep only "
            f"{', '.join(sorted(_SUFFIX_FORMATS))} files there, or set `format:` in its source"
        )
    if not files:
        raise ProblemReadError(f"problem source {str(folder)!r} is an empty folder")
    for file in files:
        for i, row in _file_rows(file, fmt or _SUFFIX_FORMATS[file.suffix.lower()]):
            yield i, row, file.name


def _file_rows(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    if fmt == "parquet":
        return enumerate(pq.read_table(path).to_pylist())
    if path.suffix.lower() == ".json" and _starts_with(path, b"["):
        return _json_array_rows(path)
    return _jsonl_rows(path)


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")  # a UTF-8 BOM, whitespace
    return head.startswith(prefix)


def _json_array_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """A JSON array of rows, numbered from 1; a file that is not valid JSON is one `invalid_json` row (or
    `undecodable`), as a bad line would be: its rows cannot be told apart."""
    data = path.read_bytes()
    try:
        rows = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        yield 1, _BadRow(data[:10_000].decode("utf-8", "replace"), "undecodable", str(exc))
        return
    except json.JSONDecodeError as exc:
        yield 1, _BadRow(data[:10_000].decode("utf-8", "replace"), "invalid_json", f"the JSON array: {exc}")
        return
    yield from enumerate(rows, start=1)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig")  # -sig: a BOM at the file's start is not part of the row
            except UnicodeDecodeError as exc:
                yield line_no, _BadRow(raw.decode("utf-8", "replace"), "undecodable", str(exc))
                continue
            try:
                yield line_no, json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_no, _BadRow(text, "invalid_json", str(exc))


def _saved_dataset_table(path: Path, split: str | None) -> pa.Table:
    """Read a folder written by `datasets.Dataset.save_to_disk` (arrow stream files) without `datasets`."""
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        if split is None:
            if len(splits) != 1:
                raise ProblemReadError(f"{path} holds splits {splits}: set `split:` in its source")
            split = splits[0]
        if split not in splits:
            raise ProblemReadError(f"{path} has no split {split!r}; it has {splits}")
        path = path / split
    state = json.loads((path / "state.json").read_text())
    tables = []
    for entry in state["_data_files"]:
        with pa.memory_map(str(path / entry["filename"])) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return pa.concat_tables(tables)


# --- one row -------------------------------------------------------------------------------------------


def _to_problem(raw: Any, source: ProblemSource, name: str) -> dict:
    if not isinstance(raw, dict):
        raise _Invalid("wrong_type", f"a row must be an object, got {type(raw).__name__}")
    preset = get_preset(source.format) if source.generated is None else None
    if preset is not None:
        raw, source = _from_preset(raw, source, preset)
    used: set[str] = set()

    def column(ours: str) -> Any:
        theirs = source.columns.get(ours)
        if theirs is not None:
            if theirs not in raw:
                raise _Invalid("missing_column", f"mapped column {theirs!r} (for {ours}) is not in the row")
            used.add(theirs)
            return raw[theirs]
        for alias in COLUMN_ALIASES.get(ours, (ours,)):
            if alias in raw:
                used.add(alias)
                return raw[alias]
        return None

    question = column(S.QUESTION)
    if question is None or (isinstance(question, str) and not question.strip()):
        raise _Invalid("missing_question", "no question text")
    if not isinstance(question, str):
        raise _Invalid("wrong_type", f"question must be text, got {type(question).__name__}")

    domain = column(S.DOMAIN) or source.domain
    spec = domain_spec(domain)
    if spec is None:
        raise _Invalid("bad_domain", f"domain {domain!r} is not one of {DOMAINS}")

    answer = column(S.ANSWER)
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if answer is not None and not isinstance(answer, str):
        raise _Invalid("wrong_type", f"answer must be text or a number, got {type(answer).__name__}")
    answer = (answer or "").strip()
    if spec.needs == S.ANSWER and not answer:
        raise _Invalid("missing_answer", f"a {domain} problem needs a gold answer")

    tests = ""
    if spec.needs == S.TESTS:
        tests = _tests_json(column(S.TESTS), source.tests_format, raw)

    given_id = column(S.PROBLEM_ID)
    problem_id = f"{name}:{given_id}" if given_id not in (None, "") else f"{name}:{_text_hash(question)}"

    meta = {k: v for k, v in raw.items() if k not in used and k != S.META}
    meta.update(_nested_meta(raw.get(S.META)))
    return {
        S.PROBLEM_ID: problem_id,
        S.DOMAIN: domain,
        S.QUESTION: question,
        S.ANSWER: answer,
        S.TESTS: tests,
        S.SOURCE: name,
        S.META: json.dumps(meta, default=str, ensure_ascii=False),
    }


def _nested_meta(value: Any) -> dict:
    """A row's own `meta` (an object, or its JSON text: generated problems and our own problem files carry
    one) as fields of the problem's meta, not one opaque string: the prompt stage reads `starter_code` there.
    Anything else is kept whole under `meta`."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {S.META: value}
        value = parsed
    return dict(value) if isinstance(value, dict) else {S.META: value}


def _from_preset(raw: dict, source: ProblemSource, preset: Preset) -> tuple[dict, ProblemSource]:
    """The preset's row (our columns, its meta as the other keys) and the source to validate it as: a code
    source unless it sets `domain:`; a `columns:` entry takes that column from the raw row instead."""
    try:
        converted = preset.convert(raw)
    except PresetReject as exc:
        raise _Invalid(exc.reason, exc.detail) from None
    row = {**converted.pop("meta", {}), **converted}
    for ours, theirs in source.columns.items():
        if theirs not in raw:
            raise _Invalid("missing_column", f"mapped column {theirs!r} (for {ours}) is not in the row")
        row[ours] = raw[theirs]
    as_native = {
        "columns": {},
        "tests_format": source.tests_format if S.TESTS in source.columns else "native",
        "domain": source.domain if "domain" in source.model_fields_set else preset.domain,
    }
    return row, source.model_copy(update=as_native)


def _tests_json(raw_tests: Any, fmt: str, row: dict) -> str:
    if raw_tests is None or raw_tests == "" or raw_tests == []:
        raise _Invalid("missing_tests", "a code problem needs tests")
    parsed = parse_literal(raw_tests)
    if fmt != "native":
        from ded_ray.verifiers.code import convert_tests

        try:
            parsed = convert_tests(parsed, fmt, **row)
        except (ValueError, KeyError, TypeError) as exc:
            raise _Invalid("bad_tests", f"cannot convert {fmt} tests: {exc}") from None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(t, dict) for t in parsed):
        raise _Invalid("bad_tests", "tests must be a non-empty list of objects")
    return json.dumps(parsed, ensure_ascii=False)


def parse_literal(value: Any) -> Any:
    """JSON text or a Python-literal string (as some dataset dumps hold) to a value; others unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise _Invalid("bad_tests", "tests are neither JSON nor a Python literal") from None


def _text_hash(text: str) -> str:
    normalized = " ".join(text.split())
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).hexdigest()


def _as_text(raw: Any) -> str:
    try:
        return json.dumps(raw, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(raw)


def _rejected(source: str, line: int, raw: str, reason: str, detail: str) -> dict:
    return {
        S.SOURCE: source,
        "line": line,
        RAW_ROW: raw[:10_000],
        S.REJECT_REASON: reason,
        S.REJECT_DETAIL: str(detail)[:1000],
    }
