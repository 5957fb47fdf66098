"""Repetition filter: reject teacher traces that degenerate into a verbatim loop (ours; the paper has none).

Long reasoning models sometimes fall into a loop: one sentence or paragraph repeated, word for word, until
max_tokens. Training a student on such a trace teaches it to loop. The measure is the share of the text that
is a verbatim repeat of earlier text:

    repeated_share = (word n-gram positions whose n-gram already occurred earlier) / (all n-gram positions)

Words are whitespace-separated tokens, punctuation attached. The n-gram is long (50 words by default, about
2–3 sentences) on purpose. Ordinary reasoning reuses short phrases ("let me check", "so the answer is",
formula fragments), and 50 verbatim words in a row are never that. A loop repeats whole paragraphs, so once
it has gone round once, nearly every later window is a repeat. The share grows with the loop's length, from
0 for a trace that never repeats itself to about 1 for a trace that is only a loop.

Measured on 3043 real R1-Distill traces (tests/stages/test_repetition.py): the median share is 0. Every trace above
0.19 ends in a loop it never leaves (cut off at 4096 tokens), and the highest share that does not is 0.135.
So the default `max_share` is 0.17 (`config.RepetitionConfig`).

A missing or non-string response is not a loop (share 0). A text under `min_words` words is never rejected:
one repeated sentence is a large share of a short text, but it is not a loop until max_tokens.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, StageError, mark_rejected

REASON = "repetition"
REASONS = (REASON,)
REPEATED_SHARE = "repeated_share"

_BASE = np.uint64(1_000_003)  # multiplier of the polynomial n-gram hash (mod 2**64)


def repeat_mask(words: list[str], ngram: int) -> np.ndarray:
    """One bool per n-gram position (len(words) - ngram + 1 of them): its n-gram already occurred earlier.

    Vectorised: each word is hashed to an int, each window becomes a polynomial hash of its words (`ngram`
    array operations), and `np.unique` finds each hash's first occurrence. That is about 1 ms for a
    16k-character trace. A 64-bit collision, which could only add a false repeat, is negligible at a few
    thousand windows.
    """
    m = len(words) - ngram + 1
    if m <= 0:
        return np.zeros(0, dtype=bool)
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrap-around is the intended mod 2**64
        for j in range(ngram):
            h = h * _BASE + ids[j : j + m]
    _, first = np.unique(h, return_index=True)
    repeated = np.ones(m, dtype=bool)
    repeated[first] = False
    return repeated


def repeated_share(text, ngram: int) -> float:
    """The share of `text`'s word n-gram positions whose n-gram occurred earlier (0.0 for non-str or short)."""
    if not isinstance(text, str):
        return 0.0
    mask = repeat_mask(text.split(), ngram)
    return float(mask.mean()) if len(mask) else 0.0


def repeated_sample(words: list[str], mask: np.ndarray, n_words: int = 12) -> str:
    """The first words of the longest run of repeated positions: where the loop is, for the reject detail."""
    if not mask.any():
        return ""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    start = int(starts[np.argmax(ends - starts)])
    return " ".join(words[start : start + n_words])


class RepetitionStage(Stage):
    """Attach `repeated_share` to each row and reject rows whose share exceeds `max_share`."""

    name: ClassVar[str] = "repetition"
    reads: ClassVar[tuple[str, ...]] = (S.RESPONSE,)
    writes: ClassVar[tuple[str, ...]] = (REPEATED_SHARE, S.REJECT_REASON, S.REJECT_DETAIL)

    def __init__(self, ngram: int = 50, max_share: float = 0.17, min_words: int = 200) -> None:
        if ngram < 1 or min_words < 1:
            raise StageError(f"stage 'repetition': ngram and min_words must be >= 1, got {ngram}, {min_words}")
        if not 0.0 <= max_share <= 1.0:
            raise StageError(f"stage 'repetition': max_share must be in [0, 1], got {max_share}")
        self.ngram, self.max_share, self.min_words = int(ngram), float(max_share), int(min_words)

    @classmethod
    def from_config(cls, cfg) -> "RepetitionStage":
        """Build from `config.RepetitionConfig` (or anything with `ngram`, `max_share`, `min_words`)."""
        return cls(ngram=cfg.ngram, max_share=cfg.max_share, min_words=cfg.min_words)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        batch = batch.copy()
        shares, flagged, details = [], [], []
        for text in batch[S.RESPONSE]:
            words = text.split() if isinstance(text, str) else []
            mask = repeat_mask(words, self.ngram)
            share = float(mask.mean()) if len(mask) else 0.0
            loop = len(words) >= self.min_words and share > self.max_share
            shares.append(share)
            flagged.append(loop)
            details.append(
                f"repeated share {share:.3f} > max_share {self.max_share} ({self.ngram}-word n-grams seen "
                f"earlier); loops on: {repeated_sample(words, mask)!r}…" if loop else None
            )
        batch[REPEATED_SHARE] = pd.Series(shares, index=batch.index, dtype=float)
        detail = pd.Series(details, index=batch.index, dtype=object)
        return mark_rejected(batch, np.array(flagged, dtype=bool), REASON, detail)
