"""PCA shift of the latent representations from the base to the distilled student (PAPER.md §4.2, Figure 4).

The method of Huan et al. 2025 (arXiv 2507.00432, `analyse_PCA_Shift.py`), which the DED paper uses:

1. every text is tokenised and cut to its first `max_tokens` (128) tokens;
2. for every hidden-state layer (`num_hidden_layers + 1`: the embeddings, then each block; the last one after
   the final norm, as transformers returns them) the states are mean-pooled over the sequence;
3. per layer, a 2-component PCA is fitted on the **base** model's pooled states;
4. base and tuned pooled states are projected on that layer's PC1/PC2 and averaged over the texts. The
   layer's point for the base is (0, PC2_base), for the tuned model (PC1_tuned − PC1_base, PC2_tuned);
5. `dis` (the paper's Figure-4 number) is the Euclidean distance between the centroid over layers of the base
   points and the centroid over layers of the tuned points.

We also report, per layer, `shift` = the distance between the two points of that layer (the centroid distance
of the projected base and tuned clouds in that layer's PC plane) and `mean_shift` over layers. Unlike `dis`,
these do not depend on the arbitrary sign of each layer's components, so shifts in opposite directions in
different layers do not cancel.

Where we differ from the cited code, and why:
- pooling is **attention-mask aware** (mean over real tokens only). The cited code left-pads a batch and
  averages the pad positions' states too, so a text's features depend on the longest text in its batch;
- texts are padded on the right, so each text keeps positions 0..n-1 whatever it is batched with;
- PCA is an SVD of the centred float64 matrix (no sklearn). The sign of each component follows scikit-learn
  ≥ 1.5 (`svd_flip(u_based_decision=False)`: the largest-magnitude loading is positive), so `dis` matches
  the cited code on the same features; projections are of the uncentred features, like the cited code;
- models run in float32 on CPU (the cited code uses bf16 on GPU);
- texts are taken in the order given (the cited code samples k=30 or 100 with seed 42): the caller chooses.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

MIN_TEXTS = 3  # two principal components need at least three points (two of a centred pair are degenerate)


def pooled_hidden_states(model, tokenizer, texts: Sequence[str], max_tokens: int = 128,
                         batch_size: int = 8) -> np.ndarray:
    """Mean-pooled hidden states, float64 array [layers (num_hidden_layers + 1), len(texts), hidden_size].

    Texts are tokenised with the tokenizer's special tokens (as the cited code does), cut to `max_tokens`.
    A text with no token at all is an error (its mean is undefined).
    """
    import torch

    if max_tokens < 1 or batch_size < 1:
        raise ValueError(f"pooled hidden states: max_tokens and batch_size must be >= 1, "
                         f"got {max_tokens}, {batch_size}")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"pooled hidden states: texts {empty[:5]} have no tokens; drop empty texts")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    layers: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            width = max(len(ids) for ids in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, row in enumerate(chunk):
                ids[j, :len(row)] = torch.tensor(row, dtype=torch.long)
                mask[j, :len(row)] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
            weights = mask.to(device).unsqueeze(-1).to(torch.float64)
            for k, states in enumerate(out.hidden_states):
                pooled = (states.to(torch.float64) * weights).sum(dim=1) / weights.sum(dim=1)
                if len(layers) <= k:
                    layers.append([])
                layers[k].append(pooled.cpu().numpy())
    return np.stack([np.concatenate(parts) for parts in layers])


def pca_components(features: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(components [n_components, dim], explained-variance ratio [n_components]) of `features` [n, dim].

    SVD of the centred matrix; each component's sign makes its largest-magnitude loading positive
    (scikit-learn ≥ 1.5 convention), so results are deterministic.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < MIN_TEXTS:
        raise ValueError(f"PCA needs a [n >= {MIN_TEXTS}, dim] matrix, got shape {x.shape}: pass more texts")
    centred = x - x.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:n_components]
    rows = np.arange(comps.shape[0])
    signs = np.sign(comps[rows, np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    comps = comps * signs[:, None]
    variance = singular ** 2
    total = variance.sum()
    ratio = variance[:n_components] / total if total > 0 else np.zeros(comps.shape[0])
    return comps, ratio


def pca_shift_from_states(base_states: np.ndarray, tuned_states: np.ndarray) -> dict[str, Any]:
    """The PCA shift from pooled states [layers, texts, dim] of the base and tuned model on the same texts.

    Returns `layers` (one dict per hidden-state layer: layer, shift, pc1_shift, pc2_base, pc2_tuned,
    explained_variance), `shifts` (per-layer shift list), `mean_shift`, `dis` (Figure-4 centroid distance),
    `num_layers`, `num_texts`. See the module docstring for the definitions.
    """
    base = np.asarray(base_states, dtype=np.float64)
    tuned = np.asarray(tuned_states, dtype=np.float64)
    if base.shape != tuned.shape or base.ndim != 3:
        raise ValueError(f"PCA shift: base states {base.shape} and tuned states {tuned.shape} must both be "
                         "[layers, texts, dim] of the same shape (same texts, same architecture)")
    layers = []
    for k in range(base.shape[0]):
        comps, ratio = pca_components(base[k])
        pc_base = base[k].mean(axis=0) @ comps.T  # mean of the projections = projection of the mean
        pc_tuned = tuned[k].mean(axis=0) @ comps.T
        pc1_shift = float(pc_tuned[0] - pc_base[0])
        layers.append({
            "layer": k,
            "shift": float(np.hypot(pc1_shift, pc_tuned[1] - pc_base[1])),
            "pc1_shift": pc1_shift,
            "pc2_base": float(pc_base[1]),
            "pc2_tuned": float(pc_tuned[1]),
            "explained_variance": [float(r) for r in ratio],
        })
    base_centroid = np.array([0.0, np.mean([r["pc2_base"] for r in layers])])
    tuned_centroid = np.array([np.mean([r["pc1_shift"] for r in layers]), np.mean([r["pc2_tuned"] for r in layers])])
    shifts = [r["shift"] for r in layers]
    return {
        "layers": layers,
        "shifts": shifts,
        "mean_shift": float(np.mean(shifts)),
        "dis": float(np.linalg.norm(tuned_centroid - base_centroid)),
        "num_layers": int(base.shape[0]),
        "num_texts": int(base.shape[1]),
    }


def shift_result(base: np.ndarray, tuned: np.ndarray, max_tokens: int) -> dict[str, Any]:
    """`pca_shift_from_states` plus how the states were pooled (for the report)."""
    if base.shape != tuned.shape:
        raise ValueError(f"PCA shift: the tuned model gives states of shape {tuned.shape}, the base {base.shape}: "
                         "compare a model with a fine-tuned copy of itself (same layers and hidden size)")
    result = pca_shift_from_states(base, tuned)
    result.update({"max_tokens": int(max_tokens), "pooling": "mean over real tokens (attention mask)"})
    return result
