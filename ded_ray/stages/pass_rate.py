"""Question compression (DED §3): drop questions the student already solves.

"The questions that are too easy for the student model are filtered out, whose pass rate is larger than a
certain threshold." The paper gives neither the threshold nor how many student rollouts estimate the rate
(PAPER.md §1.3). Our defaults (`config.PassRateConfig`): k = 4 student rollouts per question with the
student's own sampling settings, threshold = 0.75 — so with k = 4 only questions the student solved 4 of 4
times are dropped, and any question it misses even once is kept as "hard". The paper kept 28% of its
verified math pool (830 → 237) with a 32B student on s1K; with small students most questions are hard
anyway, so a strict "always solved" rule loses little signal. Raise k for a finer rate.

Two steps, both pure functions of DataFrames:

1. `student_pass_rates(student_rows)`: from verified *student* rollouts (one row per rollout, a `verdict`
   column) → one row per question: `pass_rate` = correct / n, with n the number of student rollouts of the
   question (k when all came back). A rollout the verifier could not decide (`unparsable`, `timeout`,
   `error`) is not a solve, so it counts in n and not in correct; its count is reported as `n_unverified`.
2. `PassRateStage(pass_rates, threshold)` on the *teacher* rows: attaches `pass_rate` (NaN when the student
   has no rollouts for the question: unknown difficulty is kept, never guessed "easy") and rejects rows of
   questions with pass_rate > threshold, reason `too_easy`, detail with the rate.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np
import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, StageError, mark_rejected

TOO_EASY = "too_easy"
N_CORRECT = "n_correct"
N_SAMPLES = "n_samples"
N_UNVERIFIED = "n_unverified"


def student_pass_rates(student_rows: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """Per question: `problem_id`, `pass_rate`, `n_correct`, `n_samples`, `n_unverified`.

    `k`: the number of rollouts per question asked for. When given, a question with more rows than `k` is
    an error (duplicated rollouts would bias the rate); fewer rows (lost rollouts) use the rows present.
    """
    missing = [c for c in (S.PROBLEM_ID, S.VERDICT) if c not in student_rows]
    if missing:
        raise StageError(f"stage 'pass_rate': student rollouts need columns {missing}; got {sorted(student_rows)}")
    verdict = student_rows[S.VERDICT]
    frame = pd.DataFrame(
        {
            S.PROBLEM_ID: student_rows[S.PROBLEM_ID].to_numpy(),
            N_CORRECT: verdict.eq("correct").fillna(False).to_numpy(dtype=bool).astype(np.int64),
            N_UNVERIFIED: (verdict.isna() | verdict.isin(["unparsable", "timeout", "error"]).fillna(False))
            .to_numpy(dtype=bool).astype(np.int64),
            N_SAMPLES: np.ones(len(student_rows), dtype=np.int64),
        }
    )
    rates = frame.groupby(S.PROBLEM_ID, sort=True, as_index=False).sum()
    if k is not None:
        over = rates[rates[N_SAMPLES] > k]
        if len(over):
            raise StageError(
                f"stage 'pass_rate': {len(over)} questions have more than k={k} student rollouts "
                f"(e.g. {over[S.PROBLEM_ID].iloc[0]!r} has {int(over[N_SAMPLES].iloc[0])}); deduplicate by rollout_id"
            )
    rates[S.PASS_RATE] = rates[N_CORRECT] / rates[N_SAMPLES]
    return rates[[S.PROBLEM_ID, S.PASS_RATE, N_CORRECT, N_SAMPLES, N_UNVERIFIED]]


class PassRateStage(Stage):
    """Attach the student's `pass_rate` to teacher rows and reject rows of too-easy questions.

    `pass_rates`: the output of `student_pass_rates` (a DataFrame) or a mapping problem_id → rate. Small (one
    entry per question), so it travels in `fn_constructor_kwargs`. Rows already rejected keep their reason.
    """

    name: ClassVar[str] = "pass_rate"
    reads: ClassVar[tuple[str, ...]] = (S.PROBLEM_ID,)
    writes: ClassVar[tuple[str, ...]] = (S.PASS_RATE, S.REJECT_REASON, S.REJECT_DETAIL)

    def __init__(self, pass_rates: pd.DataFrame | Mapping[str, float], threshold: float = 0.75) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise StageError(f"stage 'pass_rate': threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        if isinstance(pass_rates, pd.DataFrame):
            self.rates = dict(zip(pass_rates[S.PROBLEM_ID], pass_rates[S.PASS_RATE].astype(float)))
            counts = pass_rates if {N_CORRECT, N_SAMPLES} <= set(pass_rates) else None
            self.fractions = (
                {} if counts is None
                else {p: f"{int(c)}/{int(n)}" for p, c, n in zip(counts[S.PROBLEM_ID], counts[N_CORRECT], counts[N_SAMPLES])}
            )
        else:
            self.rates = {str(p): float(r) for p, r in pass_rates.items()}
            self.fractions = {}

    @classmethod
    def from_config(cls, cfg, pass_rates) -> "PassRateStage":
        """Build from `config.PassRateConfig` and the student's rates."""
        return cls(pass_rates, threshold=cfg.threshold)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        batch = batch.copy()
        ids = batch[S.PROBLEM_ID].astype(str)
        rate = ids.map(self.rates).astype(float)
        batch[S.PASS_RATE] = rate
        too_easy = rate.gt(self.threshold).fillna(False).to_numpy(dtype=bool)
        detail = pd.Series(
            [
                f"student pass rate {r:.3f}{' (' + self.fractions[p] + ')' if p in self.fractions else ''} "
                f"> threshold {self.threshold}"
                for p, r in zip(ids, rate)
            ],
            index=batch.index,
        )
        return mark_rejected(batch, too_easy, TOO_EASY, detail)
