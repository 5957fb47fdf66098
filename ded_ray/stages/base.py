"""What every pipeline stage is: a small callable class over a pandas batch.

A stage computes; Ray schedules. Heavy setup (loading a model, starting a process pool) happens in
`__init__`, once per Ray Data actor; `__call__` maps one pandas DataFrame batch to another. The same class is
passed to `Dataset.map_batches` by the runner and is called directly on a plain DataFrame in tests.

A stage declares the columns it reads and writes. A filtering stage does not drop rows: it sets
`reject_reason` (a short slug; None = keep) and `reject_detail`, and the runner routes rejected rows to
`rejected/<stage>/<reason>/` — so every input row ends up either downstream or under exactly one reason.
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from ded_ray import schema as S


class StageError(RuntimeError):
    """A stage could not run (bad input columns, missing dependency); the message names the stage."""


class Stage:
    name: ClassVar[str] = "stage"
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:  # pragma: no cover - interface
        raise NotImplementedError

    def check_columns(self, batch: pd.DataFrame) -> None:
        missing = [c for c in self.reads if c not in batch.columns]
        if missing:
            raise StageError(
                f"stage {self.name!r} needs columns {missing}; the batch has {sorted(batch.columns)}"
            )


def mark_rejected(batch: pd.DataFrame, mask, reason: str, detail=None) -> pd.DataFrame:
    """Set `reject_reason` (and detail) on rows in `mask` that are not already rejected.

    `detail` is a scalar or a Series aligned with the batch. The first reason a row gets is kept, so
    each row counts under exactly one reason in the funnel.
    """
    if S.REJECT_REASON not in batch.columns:
        batch[S.REJECT_REASON] = pd.Series([None] * len(batch), index=batch.index, dtype=object)
        batch[S.REJECT_DETAIL] = pd.Series([None] * len(batch), index=batch.index, dtype=object)
    fresh = pd.Series(mask, index=batch.index).astype(bool) & batch[S.REJECT_REASON].isna()
    batch.loc[fresh, S.REJECT_REASON] = reason
    if detail is not None:
        values = detail[fresh] if isinstance(detail, pd.Series) else detail
        batch.loc[fresh, S.REJECT_DETAIL] = values
    return batch


def kept(batch: pd.DataFrame) -> pd.DataFrame:
    """Rows not rejected by any stage so far."""
    if S.REJECT_REASON not in batch.columns:
        return batch
    return batch[batch[S.REJECT_REASON].isna()]
