"""Benchmark presets (`format: livecodebench | codeforces | leetcode | humaneval`) on rows in each official format.

The fixtures are real rows (tests/fixtures/presets/make_fixtures.py); the reference programs run in the real
sandbox, so a preset that loads a problem with tests its own solution fails (or a wrong one passes) is caught.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import typing
import zlib
from pathlib import Path

from ded_ray import schema as S
from ded_ray.config import ProblemSource
from ded_ray.io import READ_REASONS, read_problems
from ded_ray.presets import PRESETS, livecodebench
from ded_ray.verifiers.code import run_tests

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LCB = FIXTURES / "presets" / "livecodebench.jsonl"
LEETCODE = FIXTURES / "presets" / "leetcode.json"
HUMANEVAL = FIXTURES / "presets" / "humaneval.jsonl"
CODEFORCES = FIXTURES / "prepare" / "codeforces" / "data"  # open-r1's columns, shared with tests/prepare


def fenced(program: str) -> str:
    return f"```python\n{program}\n```"


def load(path: Path, fmt: str, **extra) -> tuple[list[dict], dict[str, int], list[str]]:
    """Rows (tests and meta parsed), reject counts by reason, reject details."""
    problems, rejected = read_problems(ProblemSource(path=str(path), format=fmt, **extra))
    rows = problems.to_dict("records")
    for row in rows:
        row[S.TESTS], row[S.META] = json.loads(row[S.TESTS]), json.loads(row[S.META])
    return rows, rejected[S.REJECT_REASON].value_counts().to_dict(), rejected[S.REJECT_DETAIL].tolist()


def raw_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_preset_is_a_config_format_and_declares_its_reasons():
    file_formats = {"auto", "jsonl", "parquet", "datasets"}
    formats = set(typing.get_args(ProblemSource.model_fields["format"].annotation))
    assert formats - file_formats == set(PRESETS)
    assert all(set(p.reasons) <= set(READ_REASONS) for p in PRESETS.values())
    assert {"needs_checker", "bad_private_tests"} <= set(READ_REASONS)


# --- livecodebench -------------------------------------------------------------------------------------

LCB_SOLUTIONS = {  # question_id -> (a correct program, a wrong one)
    "abc365_a": ("y = int(input())\nprint(366 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 365)",
                 "y = int(input())\nprint(366 if y % 4 == 0 else 365)"),  # 1800 is not a leap year
    "abc365_b": ("input()\na = list(map(int, input().split()))\nprint(a.index(sorted(a)[-2]) + 1)",
                 "input()\na = list(map(int, input().split()))\nprint(a.index(max(a)) + 1)"),
    "abc374_a": ("print('Yes' if input().strip().endswith('san') else 'No')", "print('Yes')"),
    "3553": (("class Solution:\n    def checkTwoChessboards(self, a: str, b: str) -> bool:\n"
              "        return (ord(a[0]) + int(a[1])) % 2 == (ord(b[0]) + int(b[1])) % 2"),
             "class Solution:\n    def checkTwoChessboards(self, a: str, b: str) -> bool:\n        return True"),
    "3676": (("class Solution:\n    def smallestNumber(self, n: int) -> int:\n        x = 1\n"
              "        while x < n:\n            x = 2 * x + 1\n        return x"),
             "class Solution:\n    def smallestNumber(self, n: int) -> int:\n        return n"),
}


def test_livecodebench_rows_load_with_public_and_private_tests():
    rows, rejected, _ = load(LCB, "livecodebench")
    assert rejected == {}
    assert [r[S.PROBLEM_ID] for r in rows] == [f"livecodebench:{q}" for q in LCB_SOLUTIONS]
    assert {r[S.DOMAIN] for r in rows} == {"code"}  # a preset is a code source without `domain:`
    for raw, row in zip(raw_rows(LCB), rows):
        # decoded here the way the release's own loader does (a trusted fixture: plain pickle.loads)
        try:
            private = json.loads(raw["private_test_cases"])
        except json.JSONDecodeError:
            private = json.loads(pickle.loads(zlib.decompress(base64.b64decode(raw["private_test_cases"]))))
        public = json.loads(raw["public_test_cases"])
        assert private, "every fixture row has private tests"
        assert len(row[S.TESTS]) == len(public) + len(private)
        assert [t["input"] for t in row[S.TESTS]] == [t["input"] for t in public + private]
        meta = row[S.META]
        assert (meta["num_public_tests"], meta["num_private_tests"]) == (len(public), len(private))
        for key in ("difficulty", "contest_date", "platform", "contest_id", "question_title", "starter_code"):
            assert meta[key] == raw[key]
        assert row[S.QUESTION] == raw["question_content"]
    by_id = {r[S.PROBLEM_ID].split(":", 1)[1]: r for r in rows}
    assert {t["type"] for t in by_id["abc365_a"][S.TESTS]} == {"stdin"}
    assert {t["fn_name"] for t in by_id["3553"][S.TESTS]} == {"checkTwoChessboards"}  # metadata.func_name
    assert {t["fn_name"] for t in by_id["3676"][S.TESTS]} == {"smallestNumber"}  # no func_name: the starter code
    assert by_id["3553"][S.META]["func_name"] == "checkTwoChessboards"


def test_livecodebench_reference_programs_pass_and_wrong_ones_fail():
    rows, _, _ = load(LCB, "livecodebench")
    for row in rows:
        right, wrong = LCB_SOLUTIONS[row[S.PROBLEM_ID].split(":", 1)[1]]
        verdict = run_tests(fenced(right), row[S.TESTS])
        assert verdict.status == "correct", (row[S.PROBLEM_ID], verdict.detail)
        assert run_tests(fenced(wrong), row[S.TESTS]).status == "wrong", row[S.PROBLEM_ID]


class _Hostile:
    """Unpickled by plain `pickle.loads`, this runs a shell command: what a crafted release row could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Hostile(marker))
    assert b"system" in payload  # the payload does name os.system
    row = raw_rows(LCB)[0] | {"private_test_cases": base64.b64encode(zlib.compress(payload)).decode()}
    rows, rejected, details = load(write_rows(tmp_path / "lcb.jsonl", [row]), "livecodebench")
    assert not marker.exists()
    assert rows == [] and rejected == {"bad_private_tests": 1}
    assert "system" in details[0] and "only plain values" in details[0]


def test_private_tests_decoding_bounds_and_shapes(tmp_path, monkeypatch):
    base = raw_rows(LCB)[0]
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}] * 50
    monkeypatch.setattr(livecodebench, "MAX_PRIVATE_BYTES", 256)  # a zip bomb, scaled down
    bomb = base | {"private_test_cases": base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()}
    garbage = base | {"private_test_cases": "not base64 nor JSON!"}
    wrong_case = base | {"private_test_cases": json.dumps([{"input": "1", "testtype": "stdin"}])}
    rows, rejected, details = load(write_rows(tmp_path / "lcb.jsonl", [bomb, garbage, wrong_case]), "livecodebench")
    assert rows == [] and rejected == {"bad_private_tests": 3}
    assert "inflate past 256 bytes" in details[0]
    assert "private_test_cases[0]" in details[2]


def test_livecodebench_row_missing_fields_or_off_enum_is_rejected_naming_it(tmp_path):
    base = raw_rows(LCB)[0]
    no_private = {k: v for k, v in base.items() if k != "private_test_cases"}
    no_metadata = {k: v for k, v in base.items() if k != "metadata"}
    odd_difficulty = base | {"question_id": "x1", "difficulty": "trivial"}
    rows, rejected, details = load(write_rows(tmp_path / "lcb.jsonl", [no_private, no_metadata, odd_difficulty]),
                                   "livecodebench")
    assert rows == [] and rejected == {"missing_column": 2, "wrong_type": 1}
    assert "'private_test_cases'" in details[0] and "'metadata'" in details[1] and "trivial" in details[2]


def test_explicit_columns_and_domain_still_win():
    rows, _, _ = load(LCB, "livecodebench", columns={"question": "question_title"})
    assert rows[0][S.QUESTION] == "Leap Year" and len(rows[0][S.TESTS]) == 4
    problems, rejected = read_problems(ProblemSource(path=str(LCB), format="livecodebench", domain="math"))
    assert problems.empty and set(rejected[S.REJECT_REASON]) == {"missing_answer"}  # math needs an answer


def test_fixture_tests_are_the_shared_copys_tests(shared_data):
    """The fixture's private tests are the shared copy's tests: nothing lost or reordered in the encoding."""
    shared = {r["question_id"]: r for r in raw_rows(shared_data / "livecodebench/lcb_v5_2408_2502_public_tests.jsonl")}
    for row in load(LCB, "livecodebench")[0]:
        original = shared[row[S.PROBLEM_ID].split(":", 1)[1]]["tests"]
        assert [(t["input"], t["output"]) for t in row[S.TESTS]] == [(t["input"], t["output"]) for t in original]


# --- codeforces ----------------------------------------------------------------------------------------

CODEFORCES_SOLUTIONS = {
    "4/A": "w = int(input())\nprint('YES' if w % 2 == 0 and w > 2 else 'NO')",
    "1/A": "n, m, a = map(int, input().split())\nprint(-(-n // a) * -(-m // a))",
}


def test_codeforces_rows_load_and_checker_problems_are_refused():
    rows, rejected, details = load(CODEFORCES, "codeforces")
    assert [r[S.PROBLEM_ID] for r in rows] == ["data:4/A", "data:1/A"]
    assert rejected == {"needs_checker": 2, "file_io": 1, "not_executable": 1, "missing_tests": 1}
    assert any("interactive" in d for d in details) and any("checker" in d for d in details)
    watermelon = rows[0]
    assert watermelon[S.META]["time_limit_s"] == 1.0 and watermelon[S.META]["memory_limit_mb"] == 64.0
    assert rows[1][S.META]["time_limit_s"] == 2.0 and rows[1][S.META]["memory_limit_mb"] == 256.0
    assert watermelon[S.QUESTION].startswith("# Watermelon") and len(watermelon[S.TESTS]) == 7
    for row in rows:
        program = CODEFORCES_SOLUTIONS[row[S.PROBLEM_ID].split(":", 1)[1]]
        assert run_tests(fenced(program), row[S.TESTS]).status == "correct", row[S.PROBLEM_ID]
    assert run_tests(fenced("print('YES')"), watermelon[S.TESTS]).status == "wrong"


def test_codeforces_row_missing_a_field_is_rejected_naming_it(tmp_path):
    import pyarrow.parquet as pq

    row = pq.read_table(CODEFORCES).to_pylist()[0]
    del row["generated_checker"]  # without it the checker problems could not be told apart
    rows, rejected, details = load(write_rows(tmp_path / "cf.jsonl", [row]), "codeforces")
    assert rows == [] and rejected == {"missing_column": 1} and "'generated_checker'" in details[0]


# --- leetcode and humaneval ----------------------------------------------------------------------------


def test_leetcode_rows_load_and_their_solutions_pass():
    rows, rejected, _ = load(LEETCODE, "leetcode")
    originals = json.loads(LEETCODE.read_text())
    assert rejected == {} and len(rows) == len(originals) == 3
    for original, row in zip(originals, rows):
        assert row[S.DOMAIN] == "code" and row[S.PROBLEM_ID].startswith("leetcode:")
        assert row[S.META]["starter_code"].startswith("class Solution:")
        assert "Please complete" not in row[S.QUESTION] and row[S.QUESTION] in original["problem"]
        assert row[S.META]["reference_solution"] == original["solutions"]
        assert [t["type"] for t in row[S.TESTS]] == ["assert"]
        verdict = run_tests(fenced(original["solutions"]), row[S.TESTS])
        assert verdict.status == "correct", verdict.detail
    wrong = rows[0][S.META]["starter_code"] + "\n        return 0"
    assert run_tests(fenced(wrong), rows[0][S.TESTS]).status == "wrong"


def test_humaneval_rows_load_and_canonical_solutions_pass():
    rows, rejected, _ = load(HUMANEVAL, "humaneval")
    originals = raw_rows(HUMANEVAL)
    assert rejected == {} and [r[S.PROBLEM_ID] for r in rows] == [f"humaneval:{o['task_id']}" for o in originals]
    for original, row in zip(originals, rows):
        assert row[S.QUESTION] == original["prompt"] == row[S.META]["starter_code"]
        assert row[S.TESTS][0]["entry_point"] == original["entry_point"]
        verdict = run_tests(fenced(original["prompt"] + original["canonical_solution"]), row[S.TESTS])
        assert verdict.status == "correct", verdict.detail
    assert run_tests(fenced(originals[0]["prompt"] + "    return False\n"), rows[0][S.TESTS]).status == "wrong"


def test_leetcode_and_humaneval_rows_missing_fields_are_rejected_naming_them(tmp_path):
    he = raw_rows(HUMANEVAL)[0]
    no_entry = {k: v for k, v in he.items() if k != "entry_point"}
    rows, rejected, details = load(write_rows(tmp_path / "he.jsonl", [no_entry]), "humaneval")
    assert rows == [] and rejected == {"missing_column": 1} and "'entry_point'" in details[0]
    lc = json.loads(LEETCODE.read_text())[0]
    no_tests = {"problem": lc["problem"], "solutions": lc["solutions"]}
    no_check = lc | {"tests": {"functional": "def check(candidate):\n    assert candidate() == 1\n"}}
    rows, rejected, details = load(write_rows(tmp_path / "lc.jsonl", [no_tests, no_check]), "leetcode")
    assert rows == [] and rejected == {"missing_column": 1, "bad_tests": 1} and "'tests'" in details[0]


def test_full_official_files_load_whole(shared_data, tmp_path):
    """Every row of the shared originals maps: the presets fit the real files, not just the fixtures."""
    import gzip

    # rllm's file repeats 15 statements (8 rows verbatim): the second copies are duplicates, never merged
    rows, rejected, _ = load(shared_data / "leetcode_rllm/original/rllm_test_code_leetcode_e55ef73.json", "leetcode")
    assert (len(rows), rejected) == (185, {"duplicate_id": 15})
    assert all(r[S.META]["starter_code"] for r in rows)
    converted, rejected, _ = load(shared_data / "leetcode_rllm/leetcode_test_200.jsonl", "leetcode")
    assert (len(converted), rejected) == (185, {"duplicate_id": 15})  # our converted copy too (reference_solution)
    with gzip.open(shared_data / "humaneval/original/HumanEval.jsonl.gz", "rb") as fh:
        (tmp_path / "HumanEval.jsonl").write_bytes(fh.read())
    rows, rejected, _ = load(tmp_path / "HumanEval.jsonl", "humaneval")
    assert (len(rows), rejected) == (164, {})
