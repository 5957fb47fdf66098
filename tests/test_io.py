"""Problem readers on the real data in ../shared/data, and on files with broken rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import ProblemSource
from ded_ray.io import ProblemReadError, read_all_problems, read_problems


# LiveCodeBench's files carry AtCoder abc377_f twice (the same statement with \n and with \r\n line
# endings, and different public tests): the second copy is rejected as a duplicate id, never silently merged.
LCB_DUPLICATE = {"duplicate_id": 1}


@pytest.mark.parametrize(
    "relpath, domain, extra, rows, rejected_reasons",
    [
        ("math500/math500.jsonl", "math", {}, 500, {}),
        ("aime2024/aime2024.jsonl", "math", {}, 30, {}),
        ("aime2025/aime2025.jsonl", "math", {}, 30, {}),
        ("livecodebench/lcb_v5_2408_2502_public_tests.jsonl", "code", {"tests_format": "lcb"}, 278, LCB_DUPLICATE),
        ("livecodebench/lcb_879_public_tests.jsonl", "code", {"tests_format": "lcb"}, 878, LCB_DUPLICATE),
    ],
)
def test_real_benchmarks_load_with_right_counts(shared_data, relpath, domain, extra, rows, rejected_reasons):
    problems, rejected = read_problems(ProblemSource(path=str(shared_data / relpath), domain=domain, **extra))
    assert rejected[S.REJECT_REASON].value_counts().to_dict() == rejected_reasons
    assert len(problems) == rows
    assert problems[S.PROBLEM_ID].is_unique
    assert list(problems.columns) == S.PROBLEM_SCHEMA.names
    assert (problems[S.QUESTION].str.len() > 0).all()
    if domain == "math":
        assert (problems[S.ANSWER].str.len() > 0).all()
    else:
        tests = problems[S.TESTS].map(json.loads)
        assert tests.map(len).min() >= 1


def test_math500_ids_and_answers_come_from_the_mapped_columns(shared_data):
    source = ProblemSource(name="math500", path=str(shared_data / "math500/math500.jsonl"),
                           columns={"problem_id": "unique_id", "question": "problem"})
    problems, _ = read_problems(source)
    first = problems.iloc[0]
    assert first[S.PROBLEM_ID] == "math500:test/precalculus/807.json"
    assert first[S.ANSWER] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert json.loads(first[S.META])["level"] == 2  # unused columns survive in meta


def test_problem_ids_are_stable_across_reads(shared_data):
    source = ProblemSource(path=str(shared_data / "aime2025/aime2025.jsonl"))
    a, _ = read_problems(source)
    b, _ = read_problems(source)
    assert a[S.PROBLEM_ID].tolist() == b[S.PROBLEM_ID].tolist()


def test_ids_derived_from_text_when_absent(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    first, _ = read_problems(ProblemSource(path=str(path), name="s"))
    path.write_text(json.dumps({"question": "What  is 1 + 1?", "answer": "2", "x": 1}) + "\n")
    second, _ = read_problems(ProblemSource(path=str(path), name="s"))
    assert first[S.PROBLEM_ID][0] == second[S.PROBLEM_ID][0]  # whitespace-insensitive text hash
    assert first[S.PROBLEM_ID][0].startswith("s:")


def test_broken_rows_are_rejected_with_reasons_and_counted(tmp_path):
    lines = [
        json.dumps({"id": 1, "question": "What is 2 + 2?", "answer": "4"}).encode(),
        b'{"id": 2, "question": "unterminated',
        b'{"id": 3, "question": "caf\xe9 latte?", "answer": "1"}',  # latin-1 byte: not UTF-8
        json.dumps({"id": 4, "answer": "5"}).encode(),
        json.dumps({"id": 5, "question": 12345, "answer": "5"}).encode(),
        json.dumps({"id": 6, "question": "What is x?", "answer": ""}).encode(),
        json.dumps({"id": 1, "question": "Duplicate id?", "answer": "3"}).encode(),
        json.dumps({"id": 7, "question": "Write code.", "domain": "code"}).encode(),
        json.dumps({"id": 8, "question": "Valid too", "answer": 7}).encode(),
        json.dumps([1, 2, 3]).encode(),
        b"",
    ]
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    problems, rejected = read_problems(ProblemSource(path=str(path), name="broken"))
    assert problems[S.PROBLEM_ID].tolist() == ["broken:1", "broken:8"]
    assert problems[S.ANSWER].tolist() == ["4", "7"]
    reasons = rejected[S.REJECT_REASON].value_counts().to_dict()
    assert reasons == {
        "invalid_json": 1, "undecodable": 1, "missing_question": 1, "wrong_type": 2,
        "missing_answer": 1, "duplicate_id": 1, "missing_tests": 1,
    }
    assert set(rejected["line"]) == {2, 3, 4, 5, 6, 7, 8, 10}
    assert len(problems) + len(rejected) == 10  # every non-blank line is accounted for


def test_parquet_and_saved_datasets_folder(tmp_path, shared_data):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(l) for l in open(shared_data / "aime2024/aime2024.jsonl")]
    df = pd.DataFrame(rows)
    df.to_parquet(tmp_path / "aime.parquet")
    from_parquet, rej = read_problems(ProblemSource(path=str(tmp_path / "aime.parquet")))
    assert len(from_parquet) == 30 and len(rej) == 0

    ds = datasets.Dataset.from_pandas(df.rename(columns={"problem": "prompt_text"}))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "aime_ds"))
    source = ProblemSource(path=str(tmp_path / "aime_ds"), split="test", columns={"question": "prompt_text"})
    from_folder, rej = read_problems(source)
    assert len(from_folder) == 30 and len(rej) == 0
    assert from_folder[S.QUESTION].tolist() == from_parquet[S.QUESTION].tolist()


def test_missing_file_and_unknown_format_are_clear(tmp_path):
    with pytest.raises(ProblemReadError, match="does not exist"):
        read_problems(ProblemSource(path=str(tmp_path / "nope.jsonl")))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ProblemReadError, match="set `format:`"):
        read_problems(ProblemSource(path=str(tmp_path / "x.csv")))


def test_duplicate_ids_across_sources(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": 1, "question": "Q?", "answer": "1"}) + "\n")
    source = ProblemSource(path=str(path), name="same")
    problems, rejected = read_all_problems([source, source])
    assert len(problems) == 1 and rejected[S.REJECT_REASON].tolist() == ["duplicate_id"]


def test_limit(shared_data):
    problems, _ = read_problems(ProblemSource(path=str(shared_data / "math500/math500.jsonl"), limit=20))
    assert len(problems) == 20


def test_a_rows_own_meta_becomes_meta_fields(tmp_path):
    """Generated problems and our own problem files carry a `meta`: its fields (starter_code) must stay
    readable fields, not one nested JSON string the prompt stage cannot see."""
    path = tmp_path / "p.jsonl"
    rows = [{"question": "q1", "answer": "1", "meta": json.dumps({"starter_code": "def f(x):", "level": 2}), "x": 1},
            {"question": "q2", "answer": "2", "meta": {"level": 3}},
            {"question": "q3", "answer": "3", "meta": "not json"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metas = [json.loads(m) for m in read_problems(ProblemSource(path=str(path)))[0][S.META]]
    assert metas == [{"x": 1, "starter_code": "def f(x):", "level": 2}, {"level": 3}, {"meta": "not json"}]

    code = read_problems(ProblemSource(generated={"families": ["code_list_end"], "per_family": 2}))[0]
    assert all(json.loads(m)["starter_code"].startswith("def ") for m in code[S.META])
