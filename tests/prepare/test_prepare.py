"""`ded prepare`: each converter on files in its source's own format, read back by the real problem reader.

Nothing is downloaded: every test passes `--source`. The eval sets use the real originals in ../shared/data
(MATH-500 and AIME 2024 from GAIR-NLP/LIMO, in the same columns as HuggingFaceH4/MATH-500 and
HuggingFaceH4/aime_2024; AIME 2025 from GAIR-NLP/AIME-Preview, laid out as opencompass/AIME2025's two files).
s1K and open-r1/codeforces have no originals here: tests/fixtures/prepare/ holds a few rows of each with the
datasets' real columns and types (make_fixtures.py says where the schema comes from).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ded_ray import schema as S
from ded_ray.cli import EXIT_FAILED, main
from ded_ray.config import load_config
from ded_ray.errors import UserError
from ded_ray.io import read_problems
from ded_ray.prepare import CONVERTERS, prepare
from ded_ray.verifiers.code import run_tests

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"

WATERMELON_RIGHT = "```python\nw = int(input())\nprint('YES' if w % 2 == 0 and w > 2 else 'NO')\n```"
WATERMELON_WRONG = "```python\nw = int(input())\nprint('YES' if w % 2 == 0 else 'NO')\n```"  # says YES for 2


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def source_entry(override_key: str, out: Path):
    """The ded-32b.yaml source entry at `override_key` (a dotted config path) with its path set to `out`."""
    config = load_config("ded-32b.yaml", [f"{override_key}.path={out}"])
    node = config
    for part in override_key.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def read_back(override_key: str, out: Path):
    problems, rejected = read_problems(source_entry(override_key, out))
    assert rejected.empty, rejected[[S.REJECT_REASON, S.REJECT_DETAIL]].to_dict("records")
    return problems


# --- s1K -----------------------------------------------------------------------------------------------


def test_s1k_takes_final_answers_and_rejects_rows_without_one(tmp_path):
    out = tmp_path / "s1k.jsonl"
    summary = prepare("s1k", out=str(out), source=str(FIXTURES / "s1k"))
    assert summary.written == 6 and dict(summary.rejected) == {"no_final_answer": 2}

    rows = {r["source_type"]: r for r in jsonl(out)}
    # never the worked solution: the metadata's answer field, the last box, or a bare answer
    assert rows["simplescaling/openaimath/Algebra"]["answer"] == "5"
    assert rows["simplescaling/openaimath/Algebra"]["answer_from"] == "metadata:answer"
    assert rows["AI-MO/NuminaMath-CoT/olympiads"]["answer"] == "\\frac{1}{2}"
    assert rows["AI-MO/NuminaMath-CoT/olympiads"]["answer_from"] == "boxed"
    assert rows["qq8933/AIME_1983_2024"]["answer"] == "15"
    assert rows["KbsdJames/Omni-MATH"]["answer"] == "\\frac{3}{4}"
    assert rows["Hothan/OlympiadBench/Open-ended/Math"]["answer"] == "3"  # ['$3$'] unwrapped
    assert rows["Idavidrein/gpqa"]["answer"] == "2"
    assert rows["Idavidrein/gpqa"]["answer_from"] == "metadata:Correct Answer"

    rejected = jsonl(tmp_path / "s1k.rejected.jsonl")
    assert {r["row"]["source_type"] for r in rejected} == {"simplescaling/s1-prob", "LiveCodeBench/release_v1"}
    assert all(r["reason"] == "no_final_answer" and r["detail"] for r in rejected)

    problems = read_back("problems.sources.0", out)  # the shipped s1k entry
    assert len(problems) == 6 and set(problems[S.DOMAIN]) == {"math"}
    assert problems[S.PROBLEM_ID].iloc[0] == "s1k:0"
    assert set(problems[S.ANSWER]) == {"5", "\\frac{1}{2}", "15", "\\frac{3}{4}", "3", "2"}
    assert json.loads(problems[S.META].iloc[0])["source_type"] == "simplescaling/openaimath/Algebra"


# --- Codeforces ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def codeforces_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("cf") / "codeforces.jsonl"
    summary = prepare("codeforces", out=str(out), source=str(FIXTURES / "codeforces"))
    return out, summary


def test_codeforces_rejects_problems_exact_match_cannot_judge(codeforces_out):
    out, summary = codeforces_out
    assert summary.written == 2
    assert dict(summary.rejected) == {"needs_checker": 2, "file_io": 1, "not_executable": 1, "no_tests": 1}
    by_id = {r["row"]["id"]: r for r in jsonl(out.with_name("codeforces.rejected.jsonl"))}
    assert "interactive" in by_id["1807/E"]["detail"] and by_id["1807/E"]["reason"] == "needs_checker"
    assert "checker" in by_id["1352/A"]["detail"] and by_id["1352/A"]["reason"] == "needs_checker"
    assert by_id["120/A"]["reason"] == "file_io"
    assert by_id["2/A"]["reason"] == "no_tests"
    assert by_id["1/B"]["reason"] == "not_executable"


def test_codeforces_rows_load_and_keep_limits(codeforces_out):
    out, _ = codeforces_out
    problems = read_back("problems.sources.1", out).set_index(S.PROBLEM_ID)  # the shipped codeforces entry
    assert list(problems.index) == ["codeforces:4/A", "codeforces:1/A"]
    assert set(problems[S.DOMAIN]) == {"code"}
    watermelon = problems.loc["codeforces:4/A"]
    assert "Time limit per test: 1 second" in watermelon[S.QUESTION]
    assert "## Examples" in watermelon[S.QUESTION] and "## Note" in watermelon[S.QUESTION]
    assert len(json.loads(watermelon[S.TESTS])) == 7
    meta = json.loads(problems.loc["codeforces:1/A"][S.META])
    assert meta["time_limit_s"] == 2.0 and meta["memory_limit_mb"] == 256.0
    assert meta["official_tests_complete"] is False


def test_codeforces_tests_judge_solutions_in_the_real_sandbox(codeforces_out):
    out, _ = codeforces_out
    problems = read_back("problems.sources.1", out).set_index(S.PROBLEM_ID)
    tests = json.loads(problems.loc["codeforces:4/A"][S.TESTS])
    right = run_tests(WATERMELON_RIGHT, tests)
    assert right.status == "correct", right.detail
    wrong = run_tests(WATERMELON_WRONG, tests)
    assert wrong.status == "wrong", wrong.detail


# --- eval sets on the real originals -------------------------------------------------------------------


def test_math500_from_its_original(tmp_path, shared_data):
    out = tmp_path / "math500.jsonl"
    original = shared_data / "math500/original/limo_eval_data_math_test.jsonl"  # HuggingFaceH4/MATH-500's columns
    summary = prepare("math500", out=str(out), source=str(original))
    assert summary.written == 500 and not summary.rejected
    problems = read_back("eval.benchmarks.2.source", out)
    assert len(problems) == 500
    first = problems.iloc[0]
    assert first[S.PROBLEM_ID] == "math500:test/precalculus/807.json"
    assert first[S.ANSWER] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert json.loads(first[S.META])["level"] == 2
    assert len(read_back("curate.decontaminate.eval_sets.2", out)) == 500


def test_aime2024_from_the_hub_layout(tmp_path, shared_data):
    # HuggingFaceH4/aime_2024 is the LIMO file's rows (AI-MO ids 60..89) plus a `year`, as one parquet shard
    rows = jsonl(shared_data / "aime2024/original/limo_eval_data_aime_test.jsonl")
    hub_copy = tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"
    hub_copy.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{**r, "year": "2024"} for r in rows]), hub_copy)

    out = tmp_path / "aime2024.jsonl"
    summary = prepare("aime2024", out=str(out), source=str(tmp_path / "hub"))
    assert summary.written == 30 and not summary.rejected
    problems = read_back("eval.benchmarks.0.source", out).set_index(S.PROBLEM_ID)
    expected = {r["id"]: r for r in jsonl(shared_data / "aime2024/aime2024.jsonl")}  # the checked conversion
    assert sorted(problems.index) == sorted(f"aime2024:{i}" for i in expected)
    for pid, row in expected.items():
        assert problems.loc[f"aime2024:{pid}", S.ANSWER] == row["answer"]


def test_aime2025_from_both_parts(tmp_path, shared_data):
    # opencompass/AIME2025 = aime2025-I.jsonl + aime2025-II.jsonl of {question, answer}, in problem order
    hub = tmp_path / "hub"
    hub.mkdir()
    for part in ("I", "II"):
        original = jsonl(shared_data / f"aime2025/original/aime_preview_test2025-{part}.jsonl")
        (hub / f"aime2025-{part}.jsonl").write_text(
            "".join(json.dumps({"question": r["problem"], "answer": r["answer"]}) + "\n" for r in original))

    out = tmp_path / "aime2025.jsonl"
    summary = prepare("aime2025", out=str(out), source=str(hub))
    assert summary.written == 30 and not summary.rejected
    problems = read_back("eval.benchmarks.1.source", out).set_index(S.PROBLEM_ID)
    expected = {r["id"]: r["answer"] for r in jsonl(shared_data / "aime2025/aime2025.jsonl")}
    assert {k.removeprefix("aime2025:"): v for k, v in problems[S.ANSWER].items()} == expected

    # GAIR-NLP's own copy (`problem`, an "I-1" id) gives the same ids
    preview = tmp_path / "preview.jsonl"
    prepare("aime2025", out=str(preview), source=str(shared_data / "aime2025/original/aime_preview_test2025-II.jsonl"))
    assert [r["problem_id"] for r in jsonl(preview)][:2] == ["2025-II-1", "2025-II-2"]


# --- the Hub (faked: nothing is downloaded in tests) ---------------------------------------------------


def test_without_source_the_hub_files_are_fetched_with_the_token(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(FIXTURES / "codeforces")  # a snapshot folder: data/train-00000-of-00001.parquet

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    summary = prepare("codeforces", out=str(tmp_path / "cf.jsonl"))
    assert summary.written == 2
    assert calls == [{"repo_id": "open-r1/codeforces", "repo_type": "dataset", "revision": None,
                      "allow_patterns": ["data/train-*.parquet"], "token": "hf_test"}]


def test_an_unreachable_hub_says_how_to_work_offline(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(**kwargs):
        raise LocalEntryNotFoundError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match=r"could not download simplescaling/s1K .*--source FILE_OR_DIR"):
        prepare("s1k", out=str(tmp_path / "s1k.jsonl"))


# --- errors and the command ----------------------------------------------------------------------------


def test_a_wrong_file_names_the_missing_columns(tmp_path, shared_data):
    with pytest.raises(UserError) as err:
        prepare("codeforces", out=str(tmp_path / "x.jsonl"),
                source=str(shared_data / "math500/original/limo_eval_data_math_test.jsonl"))
    message = str(err.value)
    assert "lacks column(s)" in message and "official_tests" in message and "interaction_format" in message
    assert not (tmp_path / "x.jsonl").exists()  # nothing half-written


def test_missing_source_and_unknown_name_are_clear(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare("s1k", source=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="knows"):
        prepare("gsm8k")
    with pytest.raises(UserError, match="holds no file matching"):
        prepare("math500", source=str(tmp_path))


def test_bad_jsonl_lines_are_rejected_not_lost(tmp_path):
    source = tmp_path / "test.jsonl"
    source.write_text('{"problem": "1+1?", "answer": "2", "unique_id": "a"}\nnot json\n'
                      '{"problem": "2+2?", "answer": "", "unique_id": "b"}\n'
                      '{"problem": "1+1?", "answer": "2", "unique_id": "a"}\n')
    summary = prepare("math500", out=str(tmp_path / "m.jsonl"), source=str(source))
    assert summary.written == 1
    assert dict(summary.rejected) == {"invalid_json": 1, "missing_answer": 1, "duplicate_id": 1}


def test_every_converter_declares_a_hub_source():
    assert set(CONVERTERS) == {"s1k", "codeforces", "aime2024", "aime2025", "math500"}
    for converter in CONVERTERS.values():
        assert "/" in converter.hub.repo_id and converter.hub.patterns and converter.reasons
        assert converter.out_path == f"data/{converter.name}.jsonl"


def test_cli_prepare_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "s1k.jsonl"
    assert main(["prepare", "s1k", "--source", str(FIXTURES / "s1k"), "--out", str(out), "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"s1k: 2 problems → {out}" in printed
    assert len(jsonl(out)) == 2
    assert main(["prepare", "s1k", "--source", str(tmp_path / "none")]) == EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err
