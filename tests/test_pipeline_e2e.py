"""The whole pipeline on the built-in SmolLM2 with a fixed teacher, math and code together (demo-mixed.yaml): a
complete, resumable run directory whose funnel, Table 3 and evaluation are per domain."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.cli import main

pytestmark = [pytest.mark.engine, pytest.mark.timeout(2400)]  # minutes of CPU generation and training

SMALL = [
    "teacher=step-1shot",
    "problems.sources.0.generated.per_family=2",
    "problems.sources.1.generated.per_family=2",
    "rollout.samples_per_question=3",
    "curate.pass_rate.k=2",
    "curate.diversity.per_question=2",
    "train.epochs=1",
    "eval.k=1",
    "eval.benchmarks.0.source.generated.per_family=2",
    "eval.benchmarks.1.source.generated.per_family=2",
]
BENCHMARKS = ("arith-heldout", "code-heldout")


def test_run_completes_and_resumes(tmp_path, ray_local, capsys):
    args = ["run", "--config", "demo-mixed", f"run.root={tmp_path}", "run.name=e2e", *SMALL]
    assert main(args) == 0
    run = tmp_path / "e2e"
    for name in ("corpus.parquet", "manifest.json", "eval.json", "report.html", "student/config.json"):
        assert (run / name).exists(), name

    manifest = json.loads((run / "manifest.json").read_text())
    steps = manifest["steps"]  # the report's time table, in run order; a quick step rounds to 0.0 s
    assert list(steps) == ["start Ray", "problems", "evaluate the base student", "smoke test", "rollouts", "verify",
                           "curate (with the student's pass-rate samples)", "train + evaluate the student"]
    assert all(seconds >= 0 for seconds in steps.values()) and steps["train + evaluate the student"] > 0
    funnel = manifest["funnel"]
    assert funnel["total"] == (4 + 4) * 3  # 4 math + 4 code problems x 3 samples, every one accounted for
    assert funnel["total"] == funnel["corpus"] + sum(r["rows"] for r in funnel["by_reason"])
    all_rows = {r["domain"]: r["rows"] for r in funnel["table3"] if r["level"] == plan.LEVELS[0]}
    assert all_rows == {"math": 12, "code": 12}  # Table 3 per domain
    corpus = pd.read_parquet(run / "corpus.parquet")
    assert len(corpus) == funnel["corpus"] and len(corpus) > 0
    assert corpus.groupby(S.PROBLEM_ID).size().max() <= 2  # P = 2 per question
    assert all(m[-1]["role"] == "assistant" for m in corpus[S.MESSAGES])
    code_rows = corpus[corpus[S.DOMAIN] == "code"]
    assert len(code_rows) > 0, "no verified code trajectory reached the corpus"
    for messages in code_rows[S.MESSAGES]:  # trained on the prompt it is evaluated with: starter code included
        assert "```python\ndef " in messages[-2]["content"] and "code block" in messages[0]["content"]

    evals = json.loads((run / "eval.json").read_text())
    for label in ("base", "student"):
        for bench in BENCHMARKS:
            result = evals[label]["benchmarks"][bench]
            assert result["questions"] == 4 and 0.0 <= result["avg_at_k"] <= 1.0, (label, bench)
    report = (run / "report.html").read_text()
    assert "code-heldout" in report and "code: rows / questions" in report

    capsys.readouterr()
    assert main(args) == 0  # rerun: every stage is read back, nothing recomputed
    err = capsys.readouterr().err
    assert "reusing" in err and "rows/s" not in err
    assert "[train] complete: reusing" in err

    # `ded ablate` on the finished run: the student trained on the first level's rows (one arm keeps CI under
    # its limit; every arm's row set, the control's draw and which arms coincide are tests/steps/test_ablate.py's)
    ablate = ["ablate", "--arms", plan.LEVELS[0], "--seeds", "1", *args[1:]]
    assert main(ablate) == 0
    out = capsys.readouterr().out
    ablation = json.loads((run / "ablation.json").read_text())
    sizes = {arm: result["rows"] for arm, result in ablation["arms"].items()}
    assert list(sizes) == [plan.LEVELS[0]] and ablation["seeds"] == 1
    assert sizes[plan.LEVELS[0]] == 24 == sum(all_rows.values())  # trained on the rows the funnel counts
    assert (run / "ablate" / plan.LEVELS[0] / "seed-0" / "manifest.json").exists()
    for arm, result in ablation["arms"].items():
        for bench in BENCHMARKS:
            score = result["benchmarks"][bench]
            assert score["questions"] == 4 and score["seeds"] == 1, (arm, bench)
            assert score["avg_at_k"] == result["per_seed"][0][bench]["avg_at_k"]  # one seed: its own score
            assert f"| {arm} | {sizes[arm]} | {result['questions']} | {bench} | {100 * score['avg_at_k']:.1f}% |" in out
    assert ablation["base"] == evals["base"]["benchmarks"]  # the untrained student is not evaluated again
    assert main(ablate) == 0  # rerun: every arm read back, the same table
    assert json.loads((run / "ablation.json").read_text()) == ablation
    assert "train: " not in capsys.readouterr().err  # no arm trained again
