"""What every benchmark module shares: the result row, and where the real test data is (when it is)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def result_row(bench: str, case: str, metric: str, value: float | None, unit: str, baseline: str | None = None,
               base_value: float | None = None, note: str | None = None, digits: int = 6) -> dict[str, Any]:
    """One result row; `value=None` for a skipped case (the note says why). With `baseline` and its
    `base_value`, the row carries `ratio` = value / base_value."""
    value = None if value is None else round(float(value), digits)
    row: dict[str, Any] = {"benchmark": bench, "case": case, "metric": metric, "value": value, "unit": unit}
    if baseline is not None and base_value and value is not None:
        row["baseline"] = baseline
        row["ratio"] = round(value / base_value, 3)
    if note:
        row["note"] = note
    return row


def shared_data_file(relative: str) -> Path | None:
    """`$DED_SHARED_DATA/<relative>` or `../shared/data/<relative>` beside the checkout; None when absent (a
    user's clone has no ../shared: the benchmark then falls back to generated data)."""
    root = os.environ.get("DED_SHARED_DATA")
    candidates = [Path(root)] if root else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    for base in candidates:
        if (base / relative).is_file():
            return base / relative
    return None
