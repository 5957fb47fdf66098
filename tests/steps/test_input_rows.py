"""Every input row accounted for, from the problem files to the first stage's counts, the manifest, the console
line and the report: input rows = problems kept + rejected, by reason, whatever shape the input takes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ded_ray import plan
from ded_ray.analysis.report import build_report
from ded_ray.config import load_config
from ded_ray.io import ProblemReadError, read_problems
from ded_ray.config import ProblemSource
from ded_ray.rundir import open_run
from ded_ray.steps import load_problems


def write_inputs(root) -> dict[str, int]:
    """Problem sources of every bad kind; returns the rows each reason should get (and 'kept')."""
    bad = root / "bad.jsonl"
    bad.write_bytes(b"\n".join([
        json.dumps({"question": "What is 1 + 1?", "answer": "2"}).encode(),
        b'{"question": "unterminated',                                          # invalid_json
        json.dumps({"question": "", "answer": "1"}).encode(),                   # missing_question
        json.dumps({"answer": "3"}).encode(),                                   # missing_question
        json.dumps({"question": "What is 2 + 2?"}).encode(),                    # missing_answer
        json.dumps({"question": "q?", "answer": "1", "domain": "chemistry"}).encode(),  # bad_domain
        json.dumps({"question": 7, "answer": "1"}).encode(),                    # wrong_type
        json.dumps(["not", "an", "object"]).encode(),                           # wrong_type
        json.dumps({"question": "Write f.", "domain": "code"}).encode(),        # missing_tests
        json.dumps({"question": "What is 1 + 1?", "answer": "2"}).encode(),     # duplicate_id (same text)
        b"",                                                                    # blank: not a row
    ]) + b"\n")
    # a whole file in Latin-1: every line undecodable
    (root / "latin1.jsonl").write_bytes("\n".join(
        json.dumps({"question": f"Qu'est-ce que {i} × 2 ?", "answer": str(2 * i)}, ensure_ascii=False)
        for i in range(3)).encode("latin-1") + b"\n")
    (root / "empty.jsonl").write_bytes(b"")
    mixed = root / "mixed"
    mixed.mkdir()
    (mixed / "a.jsonl").write_text(json.dumps({"question": "What is 3 + 3?", "answer": "6"}) + "\n{oops\n")
    pd.DataFrame([{"question": "What is 4 + 4?", "answer": "8"}, {"question": None, "answer": "1"}]).to_parquet(
        mixed / "b.parquet")
    (mixed / "c.json").write_text(json.dumps([{"question": "What is 5 + 5?", "answer": "10"},
                                              {"question": "What is 6 + 6?"}], indent=2))
    (mixed / "_SUCCESS").write_text("")  # not data
    return {"kept": 1 + 3, "invalid_json": 2, "missing_question": 3, "missing_answer": 2, "bad_domain": 1,
            "wrong_type": 2, "missing_tests": 1, "duplicate_id": 1, "undecodable": 3}


def test_input_rows_equal_kept_plus_rejected_by_reason(tmp_path, capsys):
    expected = write_inputs(tmp_path)
    sources = ", ".join(f"{{path: '{tmp_path / name}'}}" for name in ("bad.jsonl", "latin1.jsonl", "empty.jsonl", "mixed"))
    config = load_config(None, [f"problems.sources=[{sources}]", f"run.root={tmp_path}/runs", "run.name=count"])
    run = open_run(config)
    result = load_problems(run, config)

    rejected = {reason: rows for reason, rows in expected.items() if reason != "kept"}
    input_rows = 10 + 3 + 0 + (2 + 2 + 2)  # non-blank lines, parquet rows, JSON array items
    assert result.rows == input_rows == expected["kept"] + sum(rejected.values())
    assert result.kept == expected["kept"] and result.rejected == rejected

    stats = run.read_manifest()["stages"][plan.PROBLEMS.name]
    assert stats["rows"] == input_rows and stats["kept"] == expected["kept"] and stats["rejected"] == rejected
    console = capsys.readouterr().err
    assert f"done: {expected['kept']} kept, {sum(rejected.values())} rejected" in console

    on_disk = sum(len(pd.read_parquet(p)) for p in (tmp_path / "runs/count/rejected" / plan.PROBLEMS.name).rglob("*.parquet"))
    assert on_disk == sum(rejected.values())  # each rejected row is kept, with its reason
    page = build_report(run)
    assert f"<b>{input_rows}</b> input rows = <b>{expected['kept']}</b> problems + {sum(rejected.values())} rejected" in page


def test_a_folders_rejects_name_their_file(tmp_path):
    write_inputs(tmp_path)
    _, rejected = read_problems(ProblemSource(path=str(tmp_path / "mixed")))
    assert sorted(rejected["reject_detail"].str.split(":").str[0]) == ["a.jsonl", "b.parquet", "c.json"]


def test_a_folder_with_an_unknown_file_is_refused_naming_it(tmp_path):
    write_inputs(tmp_path)
    (tmp_path / "mixed" / "notes.txt").write_text("not problems")
    with pytest.raises(ProblemReadError, match="notes.txt"):
        read_problems(ProblemSource(path=str(tmp_path / "mixed")))
