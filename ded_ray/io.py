"""Problem readers: jsonl, parquet and saved `datasets` folders, with a column mapping.

`read_problems(source)` returns `(problems, rejected)`: two DataFrames. Valid rows have exactly the
columns of `schema.PROBLEM_SCHEMA`; every invalid row (undecodable text, bad JSON, missing question, wrong
types, empty math answer, code without tests, duplicate id) is in `rejected` with `reject_reason` and
`reject_detail` — nothing is dropped silently and nothing crashes the read.
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
                "missing_answer", "missing_tests", "bad_tests", "duplicate_id")


class ProblemReadError(UserError, ValueError):
    """The source as a whole cannot be read (missing file, unknown format); names the source."""


def read_problems(source: ProblemSource) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate one problem source; see the module docstring for the contract."""
    name = source.name or (Path(source.path).stem if source.path else "generated")
    if source.generated is not None:
        from ded_ray.generated import generate_problems

        g = source.generated
        raw_rows = iter(enumerate(generate_problems(g.families, g.per_family, g.seed)))
    else:
        raw_rows = _raw_rows(source)

    good, bad, seen = [], [], set()
    for line_no, raw in raw_rows:
        if source.limit is not None and len(good) >= source.limit:
            break
        if isinstance(raw, _BadRow):
            bad.append(_rejected(name, line_no, raw.text, raw.reason, raw.detail))
            continue
        try:
            row = _to_problem(raw, source, name)
        except _Invalid as exc:
            bad.append(_rejected(name, line_no, _as_text(raw), exc.reason, exc.detail))
            continue
        if row[S.PROBLEM_ID] in seen:
            bad.append(_rejected(name, line_no, _as_text(raw), "duplicate_id", row[S.PROBLEM_ID]))
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


def _raw_rows(source: ProblemSource) -> Iterator[tuple[int, Any]]:
    path = Path(source.path).expanduser()
    if not path.exists():
        raise ProblemReadError(f"problem source {source.path!r} does not exist")
    fmt = source.format
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt == "jsonl":
        return _jsonl_rows(path)
    if fmt == "parquet":
        return enumerate(pq.read_table(path).to_pylist())
    if fmt == "datasets":
        return enumerate(_saved_dataset_table(path, source.split).to_pylist())
    raise ProblemReadError(f"problem source {source.path!r}: unknown format {fmt!r}")


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return "datasets"
        if any(path.glob("*.parquet")):
            return "parquet"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise ProblemReadError(
        f"cannot tell the format of {path}: set `format:` to jsonl, parquet or datasets in its source"
    )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
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

    meta = {k: v for k, v in raw.items() if k not in used}
    return {
        S.PROBLEM_ID: problem_id,
        S.DOMAIN: domain,
        S.QUESTION: question,
        S.ANSWER: answer,
        S.TESTS: tests,
        S.SOURCE: name,
        S.META: json.dumps(meta, default=str, ensure_ascii=False),
    }


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
