"""`ded eval` on SmolLM2: an 8-question slice of MATH-500 and generated arithmetic → eval.json with avg@k ± stderr,
both benchmarks sampled in one engine pass."""

from __future__ import annotations

import json

import pytest

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.cli import main
from ded_ray.rundir import RunDir

pytestmark = [pytest.mark.engine, pytest.mark.timeout(2400)]  # minutes of CPU generation and training


def test_ded_eval_writes_avg_at_k_with_standard_errors(tmp_path, shared_data, ray_local):
    math500 = shared_data / "math500" / "math500.jsonl"
    benchmarks = (f"[{{name: math500, source: {{name: math500, path: '{math500}', limit: 8}}}}, "
                  "{name: arith, source: {name: arith, generated: {families: [add_1digit], per_family: 6, seed: 3}}}]")
    args = ["eval", "--model", "smollm2-135m", "--label", "smollm2", f"run.root={tmp_path}", "run.name=ev",
            f"eval.benchmarks={benchmarks}", "eval.k=2", "eval.sampling={max_tokens: 64}"]
    assert main(args) == 0
    results = json.loads((tmp_path / "ev" / "eval.json").read_text())["smollm2"]["benchmarks"]
    assert set(results) == {"math500", "arith"}
    assert results["math500"]["questions"] == 8 and results["arith"]["questions"] == 6
    for result in results.values():
        assert result["k"] == 2 and result["samples"] == 2 * result["questions"]
        assert 0.0 <= result["avg_at_k"] <= 1.0 and result["stderr"] is not None
    assert set(results["math500"]["splits"]) <= {"1", "2", "3", "4", "5"}  # MATH levels as difficulty splits
    # both benchmarks in one engine pass (one model load), each problem id under its benchmark's name
    sampled = RunDir(str(tmp_path), "ev").sub("eval", "smollm2").stage(plan.SAMPLE)
    assert sampled.is_complete() and sampled.num_rows() == 2 * (8 + 6)
    ids = set(sampled.read(columns=[S.PROBLEM_ID]).column(S.PROBLEM_ID).to_pylist())
    assert {i.split("/", 1)[0] for i in ids} == {"math500", "arith"} and len(ids) == 8 + 6
