"""A small curated run directory written through the real stage runner, for tests that read one back.

16 trajectories (4 questions x 4 samples): sample 3 of each question is wrong; q0 is too easy (pass rate 1.0);
diversity drops sample 2 of each remaining question. So: all 16, right 12, right-hard 9, right-hard-diverse 6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ded_ray import schema as S
from ded_ray.rundir import RunDir
from ded_ray.runner import run_stage
from ded_ray.stages.base import mark_rejected
from ded_ray.steps.evaluate import record_eval


def trajectories() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for q in range(4):
        for k in range(4):
            rows.append({S.PROBLEM_ID: f"q{q}", S.ROLLOUT_ID: f"q{q}#t#{k}", S.DOMAIN: "math", S.TEACHER: "t",
                         S.QUESTION: f"What is {q} + {k}?", S.RESPONSE: f"{q} + {k} = {q + k}. " + "step " * k,
                         S.NUM_TOKENS: int(rng.integers(5, 40)), S.VERDICT: "correct" if k < 3 else "wrong",
                         S.TOKEN_ENTROPY: float(rng.random())})
    return pd.DataFrame(rows)


def _kept(table: pd.DataFrame) -> pd.DataFrame:
    return table[table[S.REJECT_REASON].isna()].drop(columns=[S.REJECT_REASON, S.REJECT_DETAIL]).copy()


def write_curated_run(root: str, name: str = "r") -> RunDir:
    """rollout -> correctness -> pass rate -> diversity -> mix, and a base / student evaluation."""
    run = RunDir(root, name)
    run.update_manifest(config={"run": {"name": name}, "curate": {"diversity": {"unit": "char"}}}, git_sha="abc")
    rows = trajectories()
    run_stage(run, 3, "rollout", lambda _d: rows.copy(), id_column=None)
    right = mark_rejected(rows.copy(), rows[S.VERDICT] != "correct", "wrong")
    run_stage(run, 4, "correctness", lambda _d: right, id_column=None)
    hard = _kept(right)
    hard[S.PASS_RATE] = hard[S.PROBLEM_ID].map({"q0": 1.0, "q1": 0.5, "q2": 0.25, "q3": 0.0})
    hard = mark_rejected(hard, hard[S.PASS_RATE] > 0.75, "too_easy")
    run_stage(run, 7, "pass_rate", lambda _d: hard, id_column=None)
    diverse = _kept(hard)
    diverse[S.DIVERSITY_MIN_DISTANCE] = 0.5
    diverse = mark_rejected(diverse, diverse[S.ROLLOUT_ID].str.endswith("#2"), "not_selected")
    run_stage(run, 8, "diversity", lambda _d: diverse, id_column=None)
    final = _kept(diverse)
    run_stage(run, 10, "mix", lambda _d: final, id_column=None)
    for label, score in (("base", 0.25), ("student", 0.5)):
        record_eval(run, label, "m", {"arith": {"questions": 4, "k": 2, "avg_at_k": score, "stderr": 0.1}})
    return run
