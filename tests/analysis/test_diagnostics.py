"""arm_diagnostics: the per-arm entropy and PCA-shift summaries the smoke test stores, JSON-able and capped."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
import torch

from ded_ray import schema as S
from ded_ray.analysis.diagnostics import arm_diagnostics
from ded_ray.analysis.entropy import entropy_summary, load_causal_lm, token_entropy_under_teacher_forcing
from ded_ray.analysis.pca_shift import pooled_hidden_states, shift_result

PROMPTS = ["Q: 2 + 3?\nA:", None, "Q: 7 * 8?\nA:", "Q: primes below 10?\nA:"]
RESPONSES = [" 5, since 2 + 3 = 5.", " (request failed)", None, " 2, 3, 5 and 7."]
TEXTS = ["What is 2 + 3?  5", "", "Compute 7 * 8.  56", "Find x with x^2 = 4.  2 or -2", "Primes below 10.  4"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from ded_ray.models import build_tiny_model

    base = build_tiny_model(seed=0)
    model, tokenizer = load_causal_lm(base)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)
    tuned = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(tuned)
    tokenizer.save_pretrained(tuned)
    return str(base), str(tuned)


def _png(b64: str) -> bool:
    return base64.b64decode(b64).startswith(b"\x89PNG")


def test_summaries_match_the_library_functions_on_the_kept_rows(pair):
    base, tuned = pair
    rollouts = pd.DataFrame({S.TOKEN_ENTROPY: [0.4, None, 0.8, 1.2], S.NUM_TOKENS: [10, 0, 10, 20]})
    out = arm_diagnostics(base, tuned, PROMPTS, RESPONSES, TEXTS, rollouts=rollouts, label="teacher-a",
                          max_responses=1, max_texts=3)
    json.dumps(out)  # stored in smoke.json as is

    # Only rows with both a prompt and a response count; the cap keeps the first one.
    want = entropy_summary(token_entropy_under_teacher_forcing(base, PROMPTS[:1], RESPONSES[:1]))
    assert out["entropy"]["n_responses"] == 1
    for key, value in want.items():
        assert out["entropy"][key] == pytest.approx(value, rel=1e-6)
    assert _png(out["entropy"]["histogram_png"])

    # Empty texts are dropped before the cap: the first three non-empty texts.
    kept_texts = [TEXTS[0], TEXTS[2], TEXTS[3]]
    model, tokenizer = load_causal_lm(base)
    tuned_states = pooled_hidden_states(load_causal_lm(tuned)[0], tokenizer, kept_texts)
    shift = shift_result(pooled_hidden_states(model, tokenizer, kept_texts), tuned_states, 128)
    np.testing.assert_allclose(out["pca_shift"]["shifts"], shift["shifts"], rtol=1e-6)
    assert out["pca_shift"]["num_texts"] == 3 and out["pca_shift"]["mean_shift"] > 0
    assert _png(out["pca_shift"]["plot_png"])
    assert out["teacher_entropy"]["token_weighted_mean"] == pytest.approx((4 + 8 + 24) / 40)


def test_a_missing_tuned_student_is_reported_and_entropy_still_computed(pair, tmp_path):
    base, _ = pair
    out = arm_diagnostics(base, str(tmp_path / "no-student"), PROMPTS, RESPONSES, TEXTS)
    assert out["entropy"]["n_tokens"] > 0
    assert "no-student" in out["pca_shift"]["error"]
    assert out["teacher_entropy"] is None
    json.dumps(out)


def test_without_a_tuned_student_or_enough_texts(pair):
    base, tuned = pair
    assert arm_diagnostics(base, None, PROMPTS, RESPONSES, TEXTS)["pca_shift"] is None
    few = arm_diagnostics(base, tuned, PROMPTS, RESPONSES, TEXTS[:2])
    assert "at least 3 benchmark texts" in few["pca_shift"]["error"]
    broken = arm_diagnostics("/nonexistent/student", tuned, PROMPTS, RESPONSES, TEXTS)
    assert "cannot load the base student" in broken["entropy"]["error"]
