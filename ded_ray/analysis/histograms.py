"""PNG histograms for the curation report: student pass rate, trajectory length, pairwise distance.

matplotlib's Agg renderer via a bare `Figure` (no display, no pyplot state; safe in Ray workers). Each `*_png` returns PNG bytes;
`write_histograms` writes the three files for a curated table and returns their paths.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ded_ray import schema as S


def histogram_png(
    values: Sequence[float], title: str, xlabel: str, bins: int | Sequence[float] = 20,
    groups: dict[str, Sequence[float]] | None = None,
) -> bytes:
    """One histogram as PNG bytes. `groups` (label → values) overlays several series instead of `values`."""
    # A bare Figure renders PNG through the Agg canvas without pyplot: no global backend switch, no display,
    # nothing left open in a long-lived Ray worker.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    series = groups if groups is not None else {"": values}
    for label, vals in series.items():
        vals = np.asarray([v for v in vals if v is not None and not pd.isna(v)], dtype=float)
        ax.hist(vals, bins=bins, alpha=0.6 if len(series) > 1 else 0.9, label=f"{label} (n={len(vals)})" if label else None)
    if len(series) > 1:
        ax.legend()
    n = sum(len(v) for v in series.values())
    ax.set_title(title if n else f"{title} (no data)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def pass_rate_png(rates: Sequence[float]) -> bytes:
    """Per-question student pass rates (one value per question, in [0, 1])."""
    # Bins centred on multiples of 1/8, so rates of k = 2, 4 or 8 rollouts each get their own bar.
    return histogram_png(rates, "Student pass rate per question", "pass rate",
                         bins=np.arange(-1 / 16, 1 + 1 / 8, 1 / 8))


def length_png(num_tokens: Sequence[float], by_label: dict[str, Sequence[float]] | None = None) -> bytes:
    """Trajectory lengths in tokens (optionally overlaid, e.g. {"all": ..., "corpus": ...})."""
    return histogram_png(num_tokens, "Trajectory length", "tokens", bins=30, groups=by_label)


def distance_png(distances: Sequence[float]) -> bytes:
    """Pairwise normalised Levenshtein distances between same-question trajectories, in [0, 1]."""
    return histogram_png(distances, "Pairwise distance within a question", "normalised Levenshtein distance",
                         bins=np.linspace(0, 1, 21))


def pairwise_distance_values(rows: pd.DataFrame, unit: str = "token", compare: str = "response",
                             tokenizer=None) -> np.ndarray:
    """Upper-triangle distances among the correct responses of each question (for `distance_png`)."""
    from ded_ray.stages.diversity import pairwise_distances, to_sequences

    if S.VERDICT in rows:
        rows = rows[rows[S.VERDICT] == "correct"]
    out = []
    for _, group in rows.groupby(S.PROBLEM_ID, sort=False):
        if len(group) < 2:
            continue
        dist = pairwise_distances(to_sequences(group[S.RESPONSE].fillna("").astype(str).tolist(), unit, tokenizer, compare))
        out.append(dist[np.triu_indices(len(group), 1)])
    return np.concatenate(out) if out else np.zeros(0)


def write_histograms(rows: pd.DataFrame, out_dir: str | Path, unit: str = "token") -> dict[str, Path]:
    """Write pass_rate.png, length.png and distance.png for a table of curated rows (all, with reasons).

    Pass rate: one value per question (needs `pass_rate`); length: `num_tokens` of all rows and of the rows
    kept; distance: pairwise within each question's correct rows. Missing columns give an empty plot.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept_mask = rows[S.REJECT_REASON].isna() if S.REJECT_REASON in rows else pd.Series(True, index=rows.index)
    rates = (
        rows.drop_duplicates(S.PROBLEM_ID)[S.PASS_RATE].to_numpy() if S.PASS_RATE in rows else np.zeros(0)
    )
    tokens = rows[S.NUM_TOKENS] if S.NUM_TOKENS in rows else pd.Series(dtype=float)
    images = {
        "pass_rate": pass_rate_png(rates),
        "length": length_png([], by_label={"all": tokens.tolist(), "corpus": tokens[kept_mask].tolist()}),
        "distance": distance_png(pairwise_distance_values(rows, unit=unit) if S.RESPONSE in rows else []),
    }
    paths = {}
    for name, png in images.items():
        paths[name] = out_dir / f"{name}.png"
        paths[name].write_bytes(png)
    return paths
