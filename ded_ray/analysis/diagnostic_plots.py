"""Plots of the paper's diagnostics (PAPER.md §4): the token-entropy histogram and the PCA shift per layer.

matplotlib's Agg canvas through a bare `Figure` (no pyplot state, safe in Ray workers); each function returns
PNG bytes. `png_base64` turns them into the string the manifest and report.html embed.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np


def png_base64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def _to_png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def entropy_histogram_png(series: dict[str, np.ndarray], title: str) -> bytes:
    """Histogram of per-token entropies in bits, one overlaid series per label ("" for a single one).

    Log-scale counts: most tokens sit near 0 bits (the paper's medians are 0.09–0.30) and the tail reaching
    several bits would otherwise be invisible. Dashed lines mark each series' mean.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    top = max([float(v.max()) for v in series.values() if v.size] + [1.0])
    bins = np.linspace(0.0, float(np.ceil(top)), 41)
    for label, values in series.items():
        name = f"{label} " if label else ""
        if values.size == 0:
            continue
        patches = ax.hist(values, bins=bins, alpha=0.6 if len(series) > 1 else 0.9,
                          label=f"{name}(n={values.size}, mean {values.mean():.3f}, median {np.median(values):.3f})")[2]
        ax.axvline(float(values.mean()), linestyle="--", color=patches[0].get_facecolor(), alpha=1.0)
    total = sum(v.size for v in series.values())
    if total:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_title(title if total else f"{title} (no data)", fontsize=9)
    ax.set_xlabel("entropy (bits)")
    ax.set_ylabel("tokens")
    return _to_png(fig)


def pca_shift_png(result: dict[str, Any], title: str = "PCA shift of the student's hidden states") -> bytes:
    """Two panels from a `pca_shift` result: the per-layer shift against the layer, and the paper's Figure-4 view.

    Right panel: one point per layer, the base at (0, PC2_base) and the tuned model at (PC1 Δ, PC2_tuned),
    with both centroids and `dis` (their distance) in the title.
    """
    from matplotlib.figure import Figure

    layers = result["layers"]
    x = [r["layer"] for r in layers]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    left = fig.add_subplot(1, 2, 1)
    left.plot(x, [r["shift"] for r in layers], marker="o")
    left.axhline(result["mean_shift"], color="gray", linestyle="--", label=f"mean {result['mean_shift']:.3g}")
    left.set_xlabel("hidden-state layer (0 = embeddings)")
    left.set_ylabel("centroid distance in the base's PC1/PC2 plane")
    left.set_title(f"{title}\n({result['num_texts']} texts)", fontsize=9)
    left.legend(fontsize=8)

    right = fig.add_subplot(1, 2, 2)
    base_y = [r["pc2_base"] for r in layers]
    tuned_x = [r["pc1_shift"] for r in layers]
    tuned_y = [r["pc2_tuned"] for r in layers]
    right.scatter([0.0] * len(layers), base_y, s=14, label="base", color="tab:blue")
    right.scatter(tuned_x, tuned_y, s=14, label="tuned", color="tab:orange")
    right.scatter([0.0], [np.mean(base_y)], marker="X", s=80, color="tab:blue", edgecolor="black")
    right.scatter([np.mean(tuned_x)], [np.mean(tuned_y)], marker="X", s=80, color="tab:orange", edgecolor="black")
    right.set_xlabel("PC1 Δ")
    right.set_ylabel("PC2")
    right.set_title(f"per-layer points (dis = {result['dis']:.3g})", fontsize=9)
    right.legend(fontsize=8)
    return _to_png(fig)
