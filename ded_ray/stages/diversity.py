"""Diverse responses (DED §3, "Diverse Responses"): per question keep the P correct trajectories that are
farthest apart by normalised Levenshtein distance.

The paper says only "calculate the Levenshtein distance among the trajectories and select the farthest P
responses for each question" (PAPER.md §1.4). Our choices where it is silent:

- distance: `rapidfuzz.distance.Levenshtein.normalized_distance` (edit distance / length of the longer
  sequence, in [0, 1]) so long and short trajectories compare on one scale;
- unit: token ids by default (a reasoning trace is ~4x fewer tokens than characters and the cost is
  quadratic in length); with no tokenizer given, a deterministic word tokenizer (`WORD_PATTERN`: runs of word
  characters, or single non-space symbols) whose words are mapped to ids in order of first appearance;
  `unit="char"` compares raw characters;
- what is compared: the whole response, or only the `<think>` part (`compare="think"`);
- how "farthest P" is chosen: greedy max-min (farthest-first traversal). Start from the most distant pair,
  then repeatedly add the trajectory whose minimum distance to the chosen set is largest. The chosen set's
  minimum pairwise distance is at least half the best possible (Gonzalez 1985 / Ravi et al. 1994), the
  order is a prefix order (the first k of a run with k+1 are the run with k), and ties go to the lowest index.

`select_diverse` is the public contract; `DiversityStage` applies it per `problem_id` to a DataFrame holding
whole groups (the runner feeds it via `ds.groupby("problem_id").map_groups(...)`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, StageError, mark_rejected

Unit = Literal["token", "char"]
Compare = Literal["response", "think"]

NOT_SELECTED = "not_selected"
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


# --- what is compared -------------------------------------------------------------------------------------


def think_part(text: str) -> str:
    """The reasoning inside `<think>…</think>`.

    Handles the three shapes a response takes: `<think>A</think>B` → A; a response that starts inside the
    think block because the prompt ended with `<think>` (`A</think>B`) → A; an unterminated `<think>A` → A.
    A response with no think tags at all is returned whole (there is nothing narrower to compare).
    """
    start = text.find(THINK_OPEN)
    body_start = start + len(THINK_OPEN) if start >= 0 else 0
    end = text.find(THINK_CLOSE, body_start)
    if start < 0 and end < 0:
        return text
    return text[body_start:end] if end >= 0 else text[body_start:]


def word_token_ids(texts: Sequence[str]) -> list[list[int]]:
    """The fallback tokenizer: `WORD_PATTERN` words mapped to ids in order of first appearance.

    Deterministic and shared across `texts`, so equal words get equal ids within one call (all that
    Levenshtein distance needs). Not a model tokenizer: lengths are words and symbols, not BPE tokens.
    """
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(w, len(vocab)) for w in WORD_PATTERN.findall(t)] for t in texts]


def to_sequences(
    texts: Sequence[str], unit: Unit = "token", tokenizer: Any = None, compare: Compare = "response"
) -> list[Sequence]:
    """What the distance runs on: strings (`unit="char"`) or lists of token ids (`unit="token"`).

    `tokenizer`: a Hugging Face tokenizer (special tokens are not added) or None for `word_token_ids`.
    Ignored for `unit="char"`.
    """
    if unit not in ("token", "char"):
        raise ValueError(f"unit must be 'token' or 'char', got {unit!r}")
    if compare not in ("response", "think"):
        raise ValueError(f"compare must be 'response' or 'think', got {compare!r}")
    texts = [think_part(t) for t in texts] if compare == "think" else list(texts)
    if unit == "char":
        return texts
    if tokenizer is None:
        return word_token_ids(texts)
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


# --- distance and selection -------------------------------------------------------------------------------


def pairwise_distances(sequences: Sequence[Sequence], workers: int = -1) -> np.ndarray:
    """M×M normalised Levenshtein distances (float64 in [0, 1], zero diagonal) with rapidfuzz cdist.

    `workers=-1` uses all cores. Two empty sequences are at distance 0.
    """
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    if len(sequences) == 0:
        return np.zeros((0, 0))
    sequences = list(sequences)
    dist = cdist(sequences, sequences, scorer=Levenshtein.normalized_distance, dtype=np.float64, workers=workers)
    np.fill_diagonal(dist, 0.0)
    return dist


def farthest_first(dist: np.ndarray, k: int) -> list[int]:
    """Greedy max-min selection of up to `k` indices from a symmetric distance matrix, in order of choice.

    First the most distant pair (lowest i, then lowest j, among equal distances; i first), then at each
    step the index whose minimum distance to those chosen is largest (lowest index among equals).
    k ≥ M returns all M in farthest-first order; k = 1 returns the first index of the most distant pair.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    m = dist.shape[0]
    if dist.shape != (m, m):
        raise ValueError(f"distance matrix must be square, got shape {dist.shape}")
    k = min(k, m)
    if k == 0:
        return []
    if m == 1:
        return [0]
    # Only pairs i < j; argmax over the row-major flattening picks the lowest (i, j) among equal maxima.
    pairs = np.where(np.triu(np.ones((m, m), dtype=bool), 1), dist, -np.inf)
    i, j = divmod(int(np.argmax(pairs)), m)
    chosen = [i, j][:k]
    closest = np.minimum(dist[i], dist[j])
    closest[chosen] = -np.inf
    while len(chosen) < k:
        nxt = int(np.argmax(closest))  # first maximum = lowest index among ties
        chosen.append(nxt)
        closest = np.minimum(closest, dist[nxt])
        closest[chosen] = -np.inf
    return chosen


@dataclass(frozen=True)
class Selection:
    """The outcome of a diversity selection over M candidates.

    `chosen`: indices in farthest-first order (rank = position). `min_distance[r]`: the minimum distance of
    `chosen[r]` to the other chosen ones (NaN when only one is chosen). `distances`: the full M×M matrix.
    """

    chosen: list[int]
    min_distance: list[float]
    distances: np.ndarray

    @property
    def rank(self) -> dict[int, int]:
        return {idx: r for r, idx in enumerate(self.chosen)}

    @property
    def set_min_distance(self) -> float:
        """The chosen set's minimum pairwise distance: what max-min selection maximises."""
        return min(self.min_distance) if len(self.chosen) > 1 else math.nan


def select_from_distances(dist: np.ndarray, k: int) -> Selection:
    chosen = farthest_first(dist, k)
    mins = []
    for idx in chosen:
        others = [o for o in chosen if o != idx]
        mins.append(float(dist[idx, others].min()) if others else math.nan)
    return Selection(chosen=chosen, min_distance=mins, distances=dist)


def select_diverse_detailed(
    texts: Sequence[str],
    k: int,
    unit: Unit = "token",
    tokenizer: Any = None,
    compare: Compare = "response",
    workers: int = -1,
) -> Selection:
    """`select_diverse` that also returns each chosen row's min distance to the others and the matrix."""
    return select_from_distances(pairwise_distances(to_sequences(texts, unit, tokenizer, compare), workers), k)


def select_diverse(
    texts: list[str], k: int, unit: str = "token", tokenizer: Any = None, compare: str = "response"
) -> list[int]:
    """Indices of the `k` most mutually distant texts, farthest-first (public contract, DESIGN.md).

    Normalised Levenshtein distance on token ids (`unit="token"`; `tokenizer` = a Hugging Face tokenizer,
    or None for the deterministic word tokenizer `word_token_ids`) or characters (`unit="char"`), on the
    whole text or only its `<think>` part (`compare="think"`); greedy max-min selection with ties to the
    lowest index. Returns all indices (in farthest-first order) when k ≥ len(texts).
    """
    return select_diverse_detailed(texts, k, unit, tokenizer, compare).chosen


# --- the Ray Data stage -----------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str) -> Any:
    """A Hugging Face tokenizer from a built-in model name, a local folder or a cached HF id."""
    from transformers import AutoTokenizer

    from ded_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model(name_or_path)))


class DiversityStage(Stage):
    """Per `problem_id`, keep the `per_question` most mutually distant correct trajectories.

    Input: a DataFrame holding whole problem groups (one or several). Candidates are rows with
    `verdict == "correct"` that no earlier stage rejected; other rows pass through untouched. Chosen rows
    get `diversity_rank` (0 = chosen first) and `diversity_min_distance` (min normalised distance to the other
    chosen rows of the question; NaN when only one is kept); unchosen candidates are rejected with reason
    `not_selected`. Row order and all other columns are preserved.

    `tokenizer`: a tokenizer object, a model name/path to load one from (the student's, so distances are in
    the tokens the student trains on), or None for the word tokenizer.
    """

    name: ClassVar[str] = "diversity"
    reads: ClassVar[tuple[str, ...]] = (S.PROBLEM_ID, S.RESPONSE, S.VERDICT)
    writes: ClassVar[tuple[str, ...]] = (
        S.DIVERSITY_MIN_DISTANCE, S.DIVERSITY_RANK, S.REJECT_REASON, S.REJECT_DETAIL,
    )

    def __init__(
        self,
        per_question: int = 4,
        unit: Unit = "token",
        compare: Compare = "response",
        tokenizer: Any = None,
        workers: int = -1,
    ) -> None:
        if per_question < 1:
            raise StageError(f"stage 'diversity': per_question must be >= 1, got {per_question}")
        if unit not in ("token", "char") or compare not in ("response", "think"):
            raise StageError(
                f"stage 'diversity': unit must be token|char and compare response|think, got {unit!r}, {compare!r}"
            )
        self.per_question = per_question
        self.unit = unit
        self.compare = compare
        self.workers = workers
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) and unit == "token" else tokenizer

    @classmethod
    def from_config(cls, cfg, tokenizer: Any = None) -> "DiversityStage":
        """Build from `config.DiversityConfig`."""
        return cls(per_question=cfg.per_question, unit=cfg.unit, compare=cfg.compare, tokenizer=tokenizer)

    def select(self, texts: list[str]) -> Selection:
        return select_diverse_detailed(texts, self.per_question, self.unit, self.tokenizer, self.compare, self.workers)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        original_index = batch.index
        batch = batch.reset_index(drop=True)  # positions = labels below; the index may repeat across blocks
        n = len(batch)
        rank = np.full(n, -1, dtype=np.int64)
        min_distance = np.full(n, np.nan)
        rejected = np.zeros(n, dtype=bool)
        detail = np.full(n, None, dtype=object)
        not_rejected = batch[S.REJECT_REASON].isna().to_numpy() if S.REJECT_REASON in batch else np.ones(n, bool)
        candidate = batch[S.VERDICT].eq("correct").fillna(False).to_numpy(dtype=bool) & not_rejected
        responses = batch[S.RESPONSE].fillna("").astype(str).to_numpy()
        groups = pd.Series(np.flatnonzero(candidate)).groupby(batch[S.PROBLEM_ID].to_numpy()[candidate], sort=False)
        # Selection breaks ties by position: order each question's rows by id, so the choice does not depend on
        # how Ray split and ordered the rows (a resumed stage reads its input in another part order).
        ids = batch[S.ROLLOUT_ID].astype(str).to_numpy() if S.ROLLOUT_ID in batch else None
        for _, positions in groups:
            positions = positions.to_numpy()
            if ids is not None:
                positions = positions[np.argsort(ids[positions], kind="stable")]
            selection = self.select(responses[positions].tolist())
            for r, (local, dmin) in enumerate(zip(selection.chosen, selection.min_distance)):
                rank[positions[local]] = r
                min_distance[positions[local]] = dmin
            chosen = set(selection.chosen)
            for local in range(len(positions)):
                if local in chosen:
                    continue
                gap = selection.distances[local, selection.chosen].min()
                rejected[positions[local]] = True
                detail[positions[local]] = (
                    f"kept {len(chosen)} of {len(positions)} correct; min {self.unit} distance to kept {gap:.4f}"
                )
        batch[S.DIVERSITY_RANK] = pd.array([int(r) if r >= 0 else pd.NA for r in rank], dtype="Int64")
        batch[S.DIVERSITY_MIN_DISTANCE] = min_distance
        batch = mark_rejected(batch, rejected, NOT_SELECTED, pd.Series(detail))
        batch.index = original_index
        return batch
