"""The corpus in chat `messages` form: schema, lineage, loadable by `datasets`."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ded_ray import schema as S
from ded_ray.stages.to_sft import assistant_content, build_corpus, write_corpus


@pytest.fixture()
def curated(shared_data) -> pd.DataFrame:
    lines = (shared_data / "reasoning_traces_thought_anchors" / "math_traces.jsonl").read_text().splitlines()[:6]
    rows = []
    for i, line in enumerate(lines):
        item = json.loads(line)
        rows.append({
            S.PROBLEM_ID: item["problem_id"], S.DOMAIN: "math", S.SOURCE: "math_traces", S.QUESTION: item["problem"],
            S.TEACHER: "r1-distill", S.SEED: i, S.ROLLOUT_ID: f'{item["problem_id"]}#r1-distill#0',
            # The prompt ended in "<think>\n": the completion starts inside the think block.
            S.RESPONSE: item["traces"][0]["completion"], S.VERDICT: "correct", S.NUM_TOKENS: 100 + i,
            S.PASS_RATE: 0.25, S.DIVERSITY_MIN_DISTANCE: 0.5 + i / 100,
            S.REJECT_REASON: "wrong" if i == 5 else None, S.REJECT_DETAIL: None,
        })
    return pd.DataFrame(rows)


def test_messages_and_lineage(curated):
    corpus = build_corpus(curated, system_prompt="Think step by step.",
                          sampling_by_teacher={"r1-distill": {"temperature": 0.6}})
    assert list(corpus.columns) == [f.name for f in S.CORPUS_SCHEMA]
    assert len(corpus) == 5  # the rejected row is not part of the corpus
    first = corpus.iloc[0]
    assert [m["role"] for m in first[S.MESSAGES]] == ["system", "user", "assistant"]
    assert first[S.MESSAGES][1]["content"] == curated[S.QUESTION].iloc[0]
    assistant = first[S.MESSAGES][2]["content"]
    assert assistant.startswith("<think>\n") and "</think>" in assistant
    assert json.loads(first[S.SAMPLING]) == {"temperature": 0.6}
    assert first[S.ROLLOUT_ID] == curated[S.ROLLOUT_ID].iloc[0] and first[S.PASS_RATE] == 0.25


def test_assistant_content_only_restores_a_missing_opening():
    assert assistant_content("a</think>b") == "<think>\na</think>b"
    assert assistant_content("<think>a</think>b") == "<think>a</think>b"
    assert assistant_content("no think at all") == "no think at all"


def test_parquet_loads_with_datasets(curated, tmp_path):
    datasets = pytest.importorskip("datasets")
    path = write_corpus(build_corpus(curated.drop(columns=[S.PASS_RATE])), tmp_path)
    assert path.name == "corpus.parquet"
    assert pq.read_schema(path).equals(S.CORPUS_SCHEMA, check_metadata=False)
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 5
    row = ds[0]
    assert [m["role"] for m in row[S.MESSAGES]] == ["user", "assistant"]  # no system prompt given
    assert row[S.PASS_RATE] is None  # stage was off: null, not a made-up number
    assert row[S.SEED] == 0 and row[S.NUM_TOKENS] == 100
    assert row[S.SAMPLING] == "{}"


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="response"):
        build_corpus(pd.DataFrame({S.QUESTION: ["q"]}))
