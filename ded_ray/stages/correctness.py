"""The paper's quality and correctness check (DED §3, "+ Right" in Table 3): keep teacher trajectories that
are short enough, well formatted and verified correct.

The verify stage only *labels* rows (`verdict`, `format_ok`, `length_ok`); this stage turns the labels into
rejections, one reason per row, checked in the paper's order — length, format, correctness:

- `length_ok` is False → `too_long`
- `format_ok` is False → `format`
- `verdict` is not `correct` → the verdict itself (`wrong`, `unparsable`, `timeout`, `error`), or
  `unverified` when the verdict is missing. `unparsable`/`timeout`/`error` mean "could not verify", not
  "wrong"; they are still left out of a training corpus (only verified-correct trajectories teach) but keep
  their own reason so the funnel shows how much was lost to the verifier rather than to the teacher.

A missing `format_ok` / `length_ok` column (or a null value) means "not checked" and rejects nothing.
"""

from __future__ import annotations

import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import mark_rejected

TOO_LONG = "too_long"
BAD_FORMAT = "format"
UNVERIFIED = "unverified"
# Every reason this stage can give (the funnel counts them as "not right").
REASONS = (TOO_LONG, BAD_FORMAT, "wrong", "unparsable", "timeout", "error", UNVERIFIED)


def _is_false(flags: pd.Series) -> pd.Series:
    """True where the flag is False; null ("not checked") is not False."""
    return flags.astype(object).map(lambda v: v is not None and not pd.isna(v) and not bool(v)).astype(bool)


def reject_incorrect(batch: pd.DataFrame) -> pd.DataFrame:
    """Mark too-long, badly formatted and not-correct rows rejected (a copy; nothing is dropped)."""
    batch = batch.copy()
    if S.LENGTH_OK in batch:
        too_long = _is_false(batch[S.LENGTH_OK])
        detail = "over the length limit"
        if S.NUM_TOKENS in batch:
            detail = "num_tokens=" + batch[S.NUM_TOKENS].astype(str) + " over the length limit"
        batch = mark_rejected(batch, too_long, TOO_LONG, detail)
    if S.FORMAT_OK in batch:
        batch = mark_rejected(batch, _is_false(batch[S.FORMAT_OK]), BAD_FORMAT, "no strict <think>…</think> pair")
    verdict = batch[S.VERDICT]
    detail = batch[S.VERDICT_DETAIL] if S.VERDICT_DETAIL in batch else None
    batch = mark_rejected(batch, verdict.isna(), UNVERIFIED, "no verdict")
    for status in S.VERDICT_STATUSES:
        if status != "correct":
            batch = mark_rejected(batch, verdict.eq(status).fillna(False), status, detail)
    unknown = verdict.notna() & ~verdict.isin(S.VERDICT_STATUSES).fillna(False)
    if unknown.any():
        batch = mark_rejected(batch, unknown, UNVERIFIED, "unknown verdict " + verdict.astype(str))
    return batch

