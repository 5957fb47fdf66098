"""The paper's two diagnostics for one smoke-test arm, as a JSON-able dict for smoke.json and the report.

`arm_diagnostics` scores the teacher's responses with the base student (token entropy, `analysis.entropy`)
and compares the base and the distilled student's hidden states on benchmark texts (PCA shift,
`analysis.pca_shift`). It is sized for CPU: the inputs are capped (first N, in the order given) and the base
model is loaded once for both. Measured with SmolLM2-135M (float32, 2 torch threads): scoring 64 responses ×
512 tokens took about 4.5 CPU-minutes and the PCA shift on 64 texts × 128 tokens about 2.5 (both models), so
the defaults (64 × 256 tokens, 32 texts — the cited code's default is 30) cost about 3.5 CPU-minutes an arm
at most, less for short responses. A diagnostic that cannot be computed reports `{"error": reason}` instead of
failing the arm: the ranking does not depend on it.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ded_ray.log import log


def _is_text(value: Any) -> bool:
    return isinstance(value, str)  # None / NaN (a failed request's row) is not a response


def _title(text: str, label: str) -> str:
    return f"{text} ({label})" if label else text


def arm_diagnostics(
    student_base: str, student_tuned: str | None, prompts: Sequence[str], responses: Sequence[str],
    texts: Sequence[str], *, rollouts=None, label: str = "", max_responses: int = 64,
    max_response_tokens: int | None = 256, max_texts: int = 32, pca_max_tokens: int = 128, batch_size: int = 8,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Entropy of the arm's corpus under the base student and the PCA shift base → tuned student.

    - `prompts`/`responses`: the teacher's rendered prompts and its responses (rollout `prompt`/`response`);
      rows whose prompt or response is missing (failed requests) are skipped; the first `max_responses` kept,
      each scored on at most `max_response_tokens` tokens.
    - `texts`: benchmark texts (question + solution) for the PCA shift; the first `max_texts` non-empty ones.
    - `student_tuned`: the distilled student's folder; None skips the PCA shift.
    - `rollouts`: optional DataFrame with the teacher-side `token_entropy` column (per-row means in bits).
    - `label`: names the arm (the teacher) in the plot titles.
    - `dtype`: both models' (`entropy.load_causal_lm`; "auto" = bf16 on GPUs, fp32 on CPU).

    Returns `{"entropy": {...summary, "histogram_png": base64, "method"}, "teacher_entropy": summary | None,
    "pca_shift": {...per-layer result, "plot_png": base64} | None}`; a section that failed is `{"error": ...}`.
    """
    from ded_ray.analysis.diagnostic_plots import pca_shift_png, png_base64
    from ded_ray.analysis.entropy import (entropy_histogram_png, entropy_summary, load_causal_lm,
                                          response_token_entropies, teacher_entropy_summary)
    from ded_ray.analysis.pca_shift import MIN_TEXTS, pooled_hidden_states, shift_result

    pairs = [(p, r) for p, r in zip(prompts, responses) if _is_text(p) and _is_text(r)][:max_responses]
    kept_texts = [t for t in texts if _is_text(t) and t.strip()][:max_texts]
    out: dict[str, Any] = {"teacher_entropy": teacher_entropy_summary(rollouts) if rollouts is not None else None}
    try:
        model, tokenizer = load_causal_lm(student_base, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - reported as the diagnostics' result, the arm goes on
        reason = f"cannot load the base student {student_base!r}: {type(exc).__name__}: {exc}"
        log(f"[diagnostics] {reason}")
        return {**out, "entropy": {"error": reason}, "pca_shift": {"error": reason} if student_tuned else None}

    started = time.perf_counter()
    try:
        values = response_token_entropies(model, tokenizer, [p for p, _ in pairs], [r for _, r in pairs],
                                          batch_size, max_response_tokens)
        out["entropy"] = {
            **entropy_summary(values), "n_responses": len(pairs),
            "max_response_tokens": max_response_tokens,
            "method": "base student, teacher-forced, full softmax at temperature 1, response tokens only, bits",
            "histogram_png": png_base64(entropy_histogram_png(
                values, title=_title("Per-token entropy of the teacher's responses under the base student", label))),
            "seconds": round(time.perf_counter() - started, 2),
        }
    except Exception as exc:  # noqa: BLE001 - reported as data
        out["entropy"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"[diagnostics] token entropy failed: {exc}")

    out["pca_shift"] = None
    if student_tuned is not None:
        started = time.perf_counter()
        try:
            if len(kept_texts) < MIN_TEXTS:
                raise ValueError(f"PCA shift needs at least {MIN_TEXTS} benchmark texts, got {len(kept_texts)}")
            base = pooled_hidden_states(model, tokenizer, kept_texts, pca_max_tokens, batch_size)
            del model
            tuned_model, _ = load_causal_lm(student_tuned, dtype=dtype)
            tuned = pooled_hidden_states(tuned_model, tokenizer, kept_texts, pca_max_tokens, batch_size)
            result = shift_result(base, tuned, pca_max_tokens)
            title = _title("PCA shift, base → distilled student", label)
            result["plot_png"] = png_base64(pca_shift_png(result, title))
            result["seconds"] = round(time.perf_counter() - started, 2)
            out["pca_shift"] = result
        except Exception as exc:  # noqa: BLE001 - reported as data
            out["pca_shift"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"[diagnostics] PCA shift failed: {exc}")
    return out
