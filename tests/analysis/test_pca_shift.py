"""PCA shift agrees with a direct numpy computation; a model vs itself is 0, a perturbed copy is positive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ded_ray.analysis import pca_shift as P
from ded_ray.analysis.diagnostic_plots import pca_shift_png
from ded_ray.analysis.entropy import load_causal_lm

TEXTS = [
    "What is 2 + 3?  2 + 3 = 5.  5",
    "Find all real x with x^2 = 4.  x = 2 or x = -2.",
    "A train travels 60 km in 1.5 hours. What is its average speed? 40 km/h",
    "Prove that the sum of two even numbers is even. " * 20,  # longer than 128 tokens: truncated
    "Compute 7 * 8.  56",
    "How many primes are below 20?  2, 3, 5, 7, 11, 13, 17, 19: eight.",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from ded_ray.models import build_tiny_model

    base = build_tiny_model(seed=0)
    other = build_tiny_model(seed=1)  # same shape, different weights
    model, tokenizer = load_causal_lm(base)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    perturbed = tmp_path_factory.mktemp("perturbed")
    model.save_pretrained(perturbed)
    tokenizer.save_pretrained(perturbed)
    return {"base": base, "other": other, "perturbed": perturbed}


def _pca_shift(base_path, tuned_path, texts, max_tokens=128, batch_size=8) -> dict:
    """What `analysis.diagnostics.arm_diagnostics` computes: both models pooled with the base's tokenizer."""
    model, tokenizer = load_causal_lm(base_path)
    base = P.pooled_hidden_states(model, tokenizer, texts, max_tokens, batch_size)
    tuned_model, _ = load_causal_lm(tuned_path)
    tuned = P.pooled_hidden_states(tuned_model, tokenizer, texts, max_tokens, batch_size)
    return P.shift_result(base, tuned, max_tokens)


def _direct_pooled(path, texts, max_tokens=128) -> np.ndarray:
    """One text at a time (no padding at all), plain mean over its first max_tokens tokens, every layer."""
    model, tokenizer = load_causal_lm(path)
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"][:max_tokens]
        with torch.no_grad():
            states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        rows.append(np.stack([s[0].double().numpy().mean(axis=0) for s in states]))
    return np.stack(rows, axis=1)  # [layers, texts, dim]


def _direct_shift(base: np.ndarray, tuned: np.ndarray) -> tuple[list[float], float]:
    """Per-layer centroid distance and the cited code's `dis`, via the covariance eigenvectors (not an SVD)."""
    shifts, records = [], []
    for b, t in zip(base, tuned):
        centred = b - b.mean(axis=0)
        eigval, eigvec = np.linalg.eigh(centred.T @ centred)
        comps = eigvec[:, np.argsort(eigval)[::-1][:2]].T
        for c in comps:  # scikit-learn >= 1.5: the largest-magnitude loading of each component is positive
            c *= np.sign(c[np.argmax(np.abs(c))])
        proj_b, proj_t = b @ comps.T, t @ comps.T  # [texts, 2]
        shifts.append(float(np.linalg.norm(proj_t.mean(axis=0) - proj_b.mean(axis=0))))
        records.append(((0.0, proj_b[:, 1].mean()), (proj_t[:, 0].mean() - proj_b[:, 0].mean(), proj_t[:, 1].mean())))
    base_centroid = np.mean([r[0] for r in records], axis=0)
    tuned_centroid = np.mean([r[1] for r in records], axis=0)
    return shifts, float(np.linalg.norm(tuned_centroid - base_centroid))


def test_agrees_with_direct_numpy_computation(models):
    got = _pca_shift(models["base"], models["other"], TEXTS, batch_size=4)  # batches with padding
    base, tuned = _direct_pooled(models["base"], TEXTS), _direct_pooled(models["other"], TEXTS)
    shifts, dis = _direct_shift(base, tuned)
    assert got["num_layers"] == 3 and got["num_texts"] == len(TEXTS)  # embeddings + 2 blocks
    np.testing.assert_allclose(got["shifts"], shifts, rtol=1e-4, atol=1e-6)
    assert got["mean_shift"] == pytest.approx(np.mean(shifts), rel=1e-4)
    assert got["dis"] == pytest.approx(dis, rel=1e-4, abs=1e-6)
    assert min(shifts) > 0


def test_pooling_is_attention_mask_aware():
    from ded_ray.models import build_tiny_model

    model, tokenizer = load_causal_lm(build_tiny_model(seed=0))
    alone = np.concatenate([P.pooled_hidden_states(model, tokenizer, [t], batch_size=1) for t in TEXTS], axis=1)
    batched = P.pooled_hidden_states(model, tokenizer, TEXTS, batch_size=len(TEXTS))
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)


def test_model_against_itself_is_zero_and_a_perturbed_copy_is_positive(models):
    same = _pca_shift(models["base"], models["base"], TEXTS)
    assert same["shifts"] == [0.0] * same["num_layers"] and same["dis"] == 0.0
    moved = _pca_shift(models["base"], models["perturbed"], TEXTS)
    assert all(s > 0 for s in moved["shifts"]) and moved["mean_shift"] > 0 and moved["dis"] > 0
    row = moved["layers"][1]
    assert row["shift"] == pytest.approx(np.hypot(row["pc1_shift"], row["pc2_tuned"] - row["pc2_base"]))
    assert moved["max_tokens"] == 128 and "attention mask" in moved["pooling"]


def test_pca_components_are_orthonormal_with_a_fixed_sign():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    comps, ratio = P.pca_components(x)
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-12)
    assert all(c[np.argmax(np.abs(c))] > 0 for c in comps)
    assert ratio[0] > ratio[1] > 0 and ratio.sum() < 1
    flipped, _ = P.pca_components(-x)  # same cloud mirrored: same axes, same signs
    np.testing.assert_allclose(np.abs(flipped), np.abs(comps), atol=1e-12)
    assert all(c[np.argmax(np.abs(c))] > 0 for c in flipped)


def test_bad_inputs_are_named(models, tmp_path):
    from ded_ray.models import build_tiny_model

    with pytest.raises(ValueError, match=r"n >= 3, dim\] matrix"):
        _pca_shift(models["base"], models["base"], TEXTS[:2])
    wider = build_tiny_model(tmp_path / "wide", hidden_size=32, intermediate_size=64)
    with pytest.raises(ValueError, match="same layers and hidden size"):
        _pca_shift(models["base"], wider, TEXTS)


def test_plot_is_a_png(models):
    result = P.pca_shift_from_states(*(_direct_pooled(models[k], TEXTS[:4]) for k in ("base", "perturbed")))
    assert pca_shift_png(result).startswith(b"\x89PNG")
