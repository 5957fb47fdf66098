"""The curated rows as an SFT corpus: chat `messages` + lineage columns (`schema.CORPUS_SCHEMA`).

`messages` is the conversation the student is trained on: the student's own prompt for the problem, made
by the one prompt builder the rollouts and the evaluation use (`stages.prompt.problem_chat`: the student's
system prompt and few-shot pairs, the question with a code problem's starter code and I/O instructions; not
the teacher's system prompt or worked examples), then the assistant turn (the teacher's response). So the
student's SFT prompt tokens are exactly the tokens of its evaluation prompt. This is the "conversational" format that `datasets`, TRL's SFTTrainer and
LLaMA-Factory (`formatting: sharegpt` with `messages`/`role`/`content` tags) read directly.

A response generated after a prompt that already ended in `<think>` (R1-style `think_prefix`) starts inside
the think block: it has `</think>` but no `<think>`. We put the opening tag back so the student learns the
whole `<think>…</think>` structure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ded_ray import schema as S
from ded_ray.stages.base import kept
from ded_ray.stages.prompt import problem_chat

CORPUS_FILE = "corpus.parquet"
CORPUS_COLUMNS = [f.name for f in S.CORPUS_SCHEMA]


def assistant_content(response: str) -> str:
    """The response, with the `<think>` opening restored when the prompt supplied it."""
    if "</think>" in response and "<think>" not in response:
        return "<think>\n" + response
    return response


def to_messages(question: str, response: str, system_prompt: Any = None, domain: str = "math", tests: Any = "",
                meta: Any = "", few_shot: Any = ()) -> list[dict[str, str]]:
    """The student's prompt for the problem (`problem_chat`) + the response as the assistant turn."""
    messages = problem_chat(question, domain, tests, meta, system_prompt, few_shot)
    messages.append({"role": "assistant", "content": assistant_content(response)})
    return messages


def build_corpus(
    batch: pd.DataFrame,
    system_prompt: Any = None,
    sampling_by_teacher: Mapping[str, Mapping] | None = None,
    few_shot: Any = (),
) -> pd.DataFrame:
    """Corpus rows (columns of `CORPUS_SCHEMA`, in order) for the rows no stage rejected.

    `system_prompt` / `few_shot`: the student's (one value or per domain). Lineage columns missing from
    `batch` become nulls (e.g. `pass_rate` when the pass-rate stage was off). `sampling`: the batch's
    `sampling` column if present, else `sampling_by_teacher[teacher]` as JSON, else "{}".
    """
    for column in (S.QUESTION, S.RESPONSE):
        if column not in batch:
            raise ValueError(f"to_sft: batch needs column {column!r}; got {sorted(batch.columns)}")
    rows = kept(batch)
    out = pd.DataFrame(index=range(len(rows)))

    def column(name: str, default: str) -> pd.Series:
        return rows[name].fillna(default) if name in rows else pd.Series([default] * len(rows), index=rows.index)

    out[S.MESSAGES] = [
        to_messages(str(q), str(r), system_prompt, str(d), t, m, few_shot)
        for q, r, d, t, m in zip(column(S.QUESTION, ""), column(S.RESPONSE, ""), column(S.DOMAIN, "math"),
                                 column(S.TESTS, ""), column(S.META, ""))
    ]
    for field in CORPUS_COLUMNS[1:]:
        if field in rows:
            out[field] = rows[field].to_numpy()
        else:
            out[field] = None
    if S.SAMPLING not in rows:
        table = {k: json.dumps(dict(v), sort_keys=True) for k, v in (sampling_by_teacher or {}).items()}
        teachers = rows[S.TEACHER] if S.TEACHER in rows else pd.Series([None] * len(rows))
        out[S.SAMPLING] = [table.get(t, "{}") for t in teachers]
    return out


def corpus_table(corpus: pd.DataFrame) -> pa.Table:
    """The corpus DataFrame as an Arrow table with exactly `CORPUS_SCHEMA` (casting ints/floats)."""
    frame = corpus[CORPUS_COLUMNS].copy()
    for field in S.CORPUS_SCHEMA:
        if pa.types.is_floating(field.type):
            frame[field.name] = pd.to_numeric(frame[field.name], errors="coerce").astype("float64")
        elif pa.types.is_integer(field.type):
            frame[field.name] = pd.array(
                [None if pd.isna(v) else int(v) for v in frame[field.name]], dtype="Int64"
            )
        elif pa.types.is_string(field.type):
            frame[field.name] = [None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
                                 for v in frame[field.name]]
    return pa.Table.from_pandas(frame, schema=S.CORPUS_SCHEMA, preserve_index=False)


def write_corpus(corpus: pd.DataFrame, path: str | Path) -> Path:
    """Write the corpus as parquet (a folder gets `corpus.parquet` inside it); returns the file path."""
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        path = path / CORPUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(corpus_table(corpus), path)
    return path

