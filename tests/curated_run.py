"""A small curated run directory written through the real stage runner and the plan, for tests that read one.

16 trajectories (4 questions x 4 samples). Every curation stage of the plan is written in order; a stage
rejects the rows of each rule below whose reason it declares, so the fixture follows the plan as it grows:
sample 3 of each question is wrong; q0 is too easy (pass rate 1.0); diversity drops sample 2 of each
remaining question. So: all 16, right 12, right-hard 9, right-hard-diverse 6, corpus 6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.rundir import RunDir, run_stage
from ded_ray.stages.base import mark_rejected
from ded_ray.steps.evaluate import record_eval

PASS_RATES = {"q0": 1.0, "q1": 0.5, "q2": 0.25, "q3": 0.0}
# reason -> the rows it rejects
RULES = {
    "wrong": lambda rows: rows[S.VERDICT] != "correct",
    "too_easy": lambda rows: rows[S.PASS_RATE] > 0.75,
    "not_selected": lambda rows: rows[S.ROLLOUT_ID].str.endswith("#2"),
}
SIZES = {"all": 16, "right": 12, "right-hard": 9, "right-hard-diverse": 6, "corpus": 6}


def trajectories() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for q in range(4):
        for k in range(4):
            rows.append({S.PROBLEM_ID: f"q{q}", S.ROLLOUT_ID: f"q{q}#t#{k}", S.SAMPLE_IDX: k, S.DOMAIN: "math", S.TEACHER: "t",
                         S.QUESTION: f"What is {q} + {k}?", S.RESPONSE: f"{q} + {k} = {q + k}. " + "step " * k,
                         S.NUM_TOKENS: int(rng.integers(5, 40)), S.VERDICT: "correct" if k < 3 else "wrong",
                         S.TOKEN_ENTROPY: float(rng.random()), S.PASS_RATE: PASS_RATES[f"q{q}"],
                         S.DIVERSITY_MIN_DISTANCE: 0.5})
    return pd.DataFrame(rows)


def write_curated_run(root: str, name: str = "r") -> RunDir:
    """Every curation stage of the plan, then a base / student evaluation."""
    run = RunDir(root, name)
    run.update_manifest(config={"run": {"name": name}, "curate": {"diversity": {"unit": "char", "per_question": 2}}}, git_sha="abc")
    rows = trajectories()
    for stage in plan.CURATION:
        out = rows.copy()
        for reason, rule in RULES.items():
            if stage.emits(reason):
                out = mark_rejected(out, rule(out), reason)
        run_stage(run, stage, lambda _done, out=out: out)
        rows = out[out[S.REJECT_REASON].isna()].drop(columns=[S.REJECT_REASON, S.REJECT_DETAIL]) \
            if S.REJECT_REASON in out else out
    for label, score in (("base", 0.25), ("student", 0.5)):
        record_eval(run, label, "m", {"arith": {"questions": 4, "k": 2, "avg_at_k": score, "stderr": 0.1}})
    return run
