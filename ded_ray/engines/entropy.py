"""Mean per-token entropy in bits from the top-k logprobs an engine returns.

vLLM and OpenAI-compatible servers return, for each generated token, the log-probabilities (natural log)
of the k most likely next tokens. We renormalise those k probabilities to sum to one and take the entropy
of that truncated distribution. It is an approximation of the full next-token entropy: the mass outside
the top k is ignored (the result is exact when k covers the whole support). The hf engine computes the
full-distribution entropy itself; this helper is for engines that only give the top k.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def topk_entropy_bits(logprobs: Sequence[float]) -> float | None:
    """Entropy in bits of the distribution given by `logprobs` (natural log), renormalised.

    Returns None for an empty step or when every entry is -inf (nothing to measure).
    """
    finite = [lp for lp in logprobs if lp is not None and math.isfinite(lp)]
    if not finite:
        return None
    top = max(finite)
    weights = [math.exp(lp - top) for lp in finite]  # shifted for numerical stability
    total = sum(weights)
    entropy = 0.0
    for w in weights:
        p = w / total
        if p > 0.0:
            entropy -= p * math.log2(p)
    return entropy


def mean_entropy_bits(steps: Iterable[Sequence[float]]) -> float | None:
    """Mean over generated tokens of `topk_entropy_bits(step)`; None when no step had logprobs."""
    values = [h for h in (topk_entropy_bits(step) for step in steps) if h is not None]
    if not values:
        return None
    return sum(values) / len(values)


def vllm_steps(logprobs: Iterable[Mapping[Any, Mapping[str, Any]]] | None, k: int) -> list[list[float]]:
    """Top-k logprob lists from vLLM's per-token `{token_id: {logprob, rank, ...}}` dicts.

    vLLM adds the sampled token to each dict even when it is outside the top k (its rank is then > k);
    it is left out so every step holds the same k candidates.
    """
    steps: list[list[float]] = []
    for step in logprobs or []:
        if not step:
            continue
        kept = [info["logprob"] for info in step.values() if info.get("rank") is None or info["rank"] <= k]
        steps.append(kept)
    return steps


def openai_steps(logprobs: Mapping[str, Any] | None) -> list[list[float]]:
    """Top-k logprob lists from an OpenAI chat completion choice's `logprobs` object.

    The format is `{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}, ...]}`.
    A step without `top_logprobs` (the server was asked for logprobs but k = 0) has no distribution and
    is skipped.
    """
    steps: list[list[float]] = []
    for token in (logprobs or {}).get("content") or []:
        top = token.get("top_logprobs") or []
        if top:
            steps.append([entry["logprob"] for entry in top])
    return steps
