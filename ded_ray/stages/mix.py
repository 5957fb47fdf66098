"""Domain mixing: cap each domain at a quota (e.g. {math: 400, code: 400}), chosen at random with a seed.

The paper trains its final model on "400+ math samples and 400+ code-related samples" (PAPER.md §1.2) without
saying how the halves were picked. Ours: among the rows no earlier stage rejected, each domain over its quota
keeps a seeded random subset — of trajectories (`by="trajectory"`: the quota counts rows) or of questions
(`by="question"`: the quota counts problem_ids and a chosen question keeps all its rows). Surplus rows are
rejected with reason `over_quota`. Domains without a quota are kept whole; a quota of 0 drops a domain.

The choice is a pure function of (seed, ids): each row or question is ranked by a hash of the seed and its
id, so it does not depend on row order or on how Ray split the data, and a rerun picks the same rows.
Mixing needs every kept row at once (a quota is global): call it on the whole curated table
(`ds.to_pandas()` after diversity — about P rows per question) or `map_batches(..., batch_size=None)`
on a single block.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal, Mapping

import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, StageError, mark_rejected

OVER_QUOTA = "over_quota"
By = Literal["trajectory", "question"]


@dataclass(frozen=True)
class QuotaReport:
    """What the mix did for one domain (units: rows for by=trajectory, questions for by=question)."""

    domain: str
    by: str
    seed: int
    quota: int | None  # None = no quota for this domain
    available: int
    kept: int
    kept_rows: int
    rejected_rows: int


def seeded_rank(ids: pd.Series, seed: int) -> pd.Series:
    """A reproducible pseudo-random sort key per id (blake2b of "seed:id"), independent of row order."""
    return ids.astype(str).map(
        lambda x: hashlib.blake2b(f"{seed}:{x}".encode(), digest_size=8).hexdigest()
    )


def apply_quotas(
    batch: pd.DataFrame, quotas: Mapping[str, int], by: By = "trajectory", seed: int = 0
) -> tuple[pd.DataFrame, list[QuotaReport]]:
    """Reject rows over each domain's quota; return the marked copy and one `QuotaReport` per domain."""
    if by not in ("trajectory", "question"):
        raise StageError(f"stage 'mix': by must be 'trajectory' or 'question', got {by!r}")
    bad = {d: q for d, q in quotas.items() if q < 0}
    if bad:
        raise StageError(f"stage 'mix': quotas must be >= 0, got {bad}")
    id_column = S.ROLLOUT_ID if by == "trajectory" else S.PROBLEM_ID
    for column in (S.DOMAIN, id_column):
        if column not in batch:
            raise StageError(f"stage 'mix': needs column {column!r} (by={by}); got {sorted(batch.columns)}")
    batch = batch.copy()
    alive = batch[S.REJECT_REASON].isna() if S.REJECT_REASON in batch else pd.Series(True, index=batch.index)
    over = pd.Series(False, index=batch.index)
    detail = pd.Series(None, index=batch.index, dtype=object)
    reports = []
    for domain in sorted(batch.loc[alive, S.DOMAIN].astype(str).unique()):
        in_domain = alive & batch[S.DOMAIN].astype(str).eq(domain)
        units = pd.Series(batch.loc[in_domain, id_column].astype(str).unique())
        quota = quotas.get(domain)
        if quota is None or len(units) <= quota:
            chosen = set(units)
        else:
            order = pd.DataFrame({"id": units, "key": seeded_rank(units, seed)}).sort_values(["key", "id"])
            chosen = set(order["id"].iloc[:quota])
        surplus = in_domain & ~batch[id_column].astype(str).isin(chosen)
        unit_name = "trajectories" if by == "trajectory" else "questions"
        over |= surplus
        detail[surplus] = f"domain {domain}: quota {quota} of {len(units)} {unit_name} (seed {seed})"
        reports.append(
            QuotaReport(
                domain=domain, by=by, seed=seed, quota=quota, available=len(units), kept=len(chosen),
                kept_rows=int((in_domain & ~surplus).sum()), rejected_rows=int(surplus.sum()),
            )
        )
    return mark_rejected(batch, over, OVER_QUOTA, detail), reports


class MixStage(Stage):
    """Stage wrapper of `apply_quotas` over the whole curated table; `self.reports` holds the last report."""

    name: ClassVar[str] = "mix"
    reads: ClassVar[tuple[str, ...]] = (S.DOMAIN,)
    writes: ClassVar[tuple[str, ...]] = (S.REJECT_REASON, S.REJECT_DETAIL)

    def __init__(self, quotas: Mapping[str, int] | None = None, by: By = "trajectory", seed: int = 0) -> None:
        self.quotas = dict(quotas or {})
        self.by = by
        self.seed = seed
        self.reports: list[QuotaReport] = []

    @classmethod
    def from_config(cls, cfg) -> "MixStage":
        """Build from `config.MixConfig`."""
        return cls(quotas=cfg.quotas, by=cfg.by, seed=cfg.seed)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        batch, self.reports = apply_quotas(batch, self.quotas, self.by, self.seed)
        return batch

    def report(self) -> list[dict]:
        """The last call's per-domain report as plain dicts (for the manifest)."""
        return [asdict(r) for r in self.reports]
