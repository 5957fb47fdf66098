"""Decontamination: reject training questions that overlap an evaluation set (the paper has none, §1.3).

Texts are normalised to words (Unicode NFKC, lower case, runs of letters/digits; punctuation, LaTeX braces
and spacing drop out), and a training question is contaminated by an evaluation item when they share a run
of words:

- both have at least `n` words (default 13, the GPT-3 / Llama decontamination length): a common `n`-gram;
- the shorter has `min_words` (default 8) ≤ m < `n` words: the shorter appears whole, word for word, in the other
  (a short question cannot share a 13-gram, but "what is the smallest prime greater than 100" inside an
  eval problem is still a leak);
- otherwise (fewer than `min_words` words): only identical texts match — a 3-word question matching any eval
  item that contains those 3 words would be noise. Identical here keeps the symbols between the words
  (`symbol_tokens`): "What is 1 * 5?" and "What is 1 + 5?" have the same words, not the same question.

Contaminated rows are rejected with reason `contaminated`; the detail names the first matching eval item
(`source/problem_id`) and the shared words.
"""

from __future__ import annotations

import re
import unicodedata
from typing import ClassVar

import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, StageError, mark_rejected

CONTAMINATED = "contaminated"
WORD = re.compile(r"[^\W_]+")


def normalize_words(text: str) -> tuple[str, ...]:
    """The words of `text` after NFKC and lower-casing (letters and digits only)."""
    return tuple(WORD.findall(unicodedata.normalize("NFKC", text or "").lower()))


# Words, and the operators that change what a short question asks; `$`, braces and punctuation still drop out.
SYMBOL_TOKEN = re.compile(r"[^\W_]+|[-+*/=^<>×÷·%]")


def symbol_tokens(text: str) -> tuple[str, ...]:
    """Words and operators, NFKC and lower-cased: spacing, LaTeX delimiters and punctuation drop out."""
    return tuple(SYMBOL_TOKEN.findall(unicodedata.normalize("NFKC", text or "").lower()))


def ngrams(words: tuple[str, ...], n: int):
    return (words[i : i + n] for i in range(len(words) - n + 1))


class EvalIndex:
    """The n-grams of a set of evaluation items, for `match` lookups.

    `items`: a DataFrame with `problem_id` and `question` (and optionally `source`, which prefixes the id).
    Memory: one tuple per eval n-gram (MATH-500 + AIME + LiveCodeBench: a few 100k), built once per actor.
    """

    def __init__(self, items: pd.DataFrame, n: int = 13, min_words: int = 8) -> None:
        if n < 1 or min_words < 1:
            raise StageError(f"stage 'decontaminate': ngram and min_words must be >= 1, got {n}, {min_words}")
        missing = [c for c in (S.PROBLEM_ID, S.QUESTION) if c not in items]
        if missing:
            raise StageError(
                f"stage 'decontaminate': eval items need columns {missing}; got {sorted(items.columns)}"
            )
        self.n = n
        self.min_words = min(min_words, n)
        sources = items[S.SOURCE].astype(str) if S.SOURCE in items else None
        self.items: list[tuple[str, tuple[str, ...]]] = []
        for i, (pid, question) in enumerate(zip(items[S.PROBLEM_ID].astype(str), items[S.QUESTION])):
            item_id = f"{sources.iloc[i]}/{pid}" if sources is not None else pid
            self.items.append((item_id, normalize_words(question)))
        self.exact: dict[tuple[str, ...], str] = {}
        self.exact_short: dict[tuple[str, ...], str] = {}  # items under min_words, by their symbol tokens
        self.grams: dict[tuple[str, ...], str] = {}
        self.short: dict[int, dict[tuple[str, ...], str]] = {}  # length -> whole short eval item -> id
        for (item_id, words), question in zip(self.items, items[S.QUESTION]):
            if not words:
                continue
            self.exact.setdefault(words, item_id)
            if len(words) < self.min_words:
                self.exact_short.setdefault(symbol_tokens(question), item_id)
            if len(words) >= n:
                for gram in ngrams(words, n):
                    self.grams.setdefault(gram, item_id)
            elif len(words) >= self.min_words:
                self.short.setdefault(len(words), {}).setdefault(words, item_id)
        self._runs_by_length: dict[int, dict[tuple[str, ...], str]] = {}

    def _runs(self, m: int) -> dict[tuple[str, ...], str]:
        """Every m-word run of every eval item (for training questions shorter than n), built on first use."""
        if m not in self._runs_by_length:
            runs: dict[tuple[str, ...], str] = {}
            for item_id, words in self.items:
                for gram in ngrams(words, m):
                    runs.setdefault(gram, item_id)
            self._runs_by_length[m] = runs
        return self._runs_by_length[m]

    def match(self, text: str) -> tuple[str, str] | None:
        """(eval item id, the shared words) of the first eval item `text` overlaps, or None."""
        words = normalize_words(text)
        m = len(words)
        if m == 0:
            return None
        if m < self.min_words:  # short: identical, symbols included, or a short eval item inside it (below)
            tokens = symbol_tokens(text)
            if tokens in self.exact_short:
                return self.exact_short[tokens], " ".join(tokens)
        elif words in self.exact:
            return self.exact[words], " ".join(words)
        if m >= self.n:
            for gram in ngrams(words, self.n):
                if gram in self.grams:
                    return self.grams[gram], " ".join(gram)
        elif m >= self.min_words:
            runs = self._runs(m)
            if words in runs:
                return runs[words], " ".join(words)
        for length in sorted(self.short):
            if length >= m:
                break
            table = self.short[length]
            for gram in ngrams(words, length):
                if gram in table:
                    return table[gram], " ".join(gram)
        return None


class DecontaminateStage(Stage):
    """Reject rows whose question overlaps an evaluation item (reason `contaminated`, detail = the item id).

    `eval_items`: problem rows of the evaluation sets (see `EvalIndex`); `ngram`: n (config
    `curate.decontaminate.ngram`); `column`: the text checked (the question by default).
    """

    name: ClassVar[str] = "decontaminate"
    reads: ClassVar[tuple[str, ...]] = (S.QUESTION,)
    writes: ClassVar[tuple[str, ...]] = (S.REJECT_REASON, S.REJECT_DETAIL)

    def __init__(
        self, eval_items: pd.DataFrame, ngram: int = 13, min_words: int = 8, column: str = S.QUESTION
    ) -> None:
        self.index = EvalIndex(eval_items, n=ngram, min_words=min_words)
        self.column = column
        self.reads = (column,)

    @classmethod
    def from_config(cls, cfg, eval_items: pd.DataFrame) -> "DecontaminateStage":
        """Build from `config.DecontamConfig` and the loaded rows of its `eval_sets`."""
        return cls(eval_items, ngram=cfg.ngram, min_words=cfg.min_words)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        batch = batch.copy()
        texts = batch[self.column].fillna("").astype(str)
        found = {text: self.index.match(text) for text in texts.unique()}  # rows of a question share it
        hits = texts.map(lambda t: found[t])
        detail = hits.map(
            lambda h: None if h is None
            else f"matches eval item {h[0]} on {len(h[1].split())} words: {h[1][:200]!r}"
        )
        return mark_rejected(batch, hits.notna(), CONTAMINATED, detail)
