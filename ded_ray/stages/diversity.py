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
- what is compared: the whole response, only the `<think>` part (`compare="think"`), or the reasoning
  without its final-answer sentence (`compare="reasoning"`, `reasoning_part`): the `<think>` part when the
  response has think tags (else the whole response), minus the last sentence holding `\\boxed{` (from the
  sentence start, i.e. just after the previous `.`/`!`/`?` + whitespace or line break, to the end of that
  line). Nothing else is stripped: an answer line without `\\boxed{` ("The answer is 5") stays. Rows whose
  `domain` is "code" are compared on the whole response unchanged (the code is the reasoning's product);
- how "farthest P" is chosen: greedy max-min (farthest-first traversal). Start from the most distant pair,
  then repeatedly add the trajectory whose minimum distance to the chosen set is largest. The chosen set's
  minimum pairwise distance is at least half the best possible (Gonzalez 1985 / Ravi et al. 1994), the
  order is a prefix order (the first k of a run with k+1 are the run with k), and ties go to the lowest index.

Options of ours, all off by default (the paper's plain criterion), aim the distance at reasoning rather than
surface: on short noisy traces most pairs are identical and the farthest pair is often a broken trace with a
right answer next to a clean one. Besides `compare="reasoning"` above:

- `dedupe`: trajectories whose compared text is equal after whitespace normalisation count as one; only the
  first (in rollout-id order) is a candidate, the others are rejected `duplicate` — even when fewer than P
  distinct ones are left (a copy adds weight, not diversity). Plain greedy already never picks a copy while
  a distinct trajectory remains (a copy is at distance 0); dedupe adds whitespace-blind equality, stops
  copies filling the P slots, and shows them in the funnel.
- `quality_guard` with `length_band` b > 1: a candidate is in the band when its length (in the comparison
  unit, of the compared text) is within [median / b, median * b] of the median over the question's correct
  candidates (lengths below 1 count as 1). Farthest-first runs over the in-band ones; when fewer than P are
  in band, all of them are kept and the rest filled from outside the band, closest to the median first (by
  ratio, ties to the lowest index), so the guard never costs a question a trajectory it would keep without
  it. Out-of-band rows not kept are rejected `outside_length_band`; in-band rows not kept `not_selected`.
  The kept order (`diversity_rank`) is still a prefix order.

`diversity_min_distance` is always the min distance of a kept row to the other kept rows, whatever the
options.

`select_diverse` is the public contract; `DiversityStage` applies it per `problem_id` to a DataFrame holding
whole groups (the runner feeds it via `ds.groupby("problem_id").map_groups(...)`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence, get_args

import numpy as np
import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, StageError, mark_rejected

Unit = Literal["token", "char"]
Compare = Literal["response", "think", "reasoning"]
COMPARES = get_args(Compare)

NOT_SELECTED = "not_selected"
DUPLICATE = "duplicate"  # dedupe: same compared text as an earlier candidate
OUTSIDE_LENGTH_BAND = "outside_length_band"  # quality_guard: length too far from the question's median
REASONS = (NOT_SELECTED, DUPLICATE, OUTSIDE_LENGTH_BAND)
BOXED = "\\boxed{"
SENTENCE_BREAK = re.compile(r"[.!?]\s|\n")  # a sentence ends at . ! ? before whitespace, or at a line break
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


def drop_boxed_sentence(text: str) -> str:
    """`text` without the sentence holding its last `\\boxed{`: from the sentence start to the end of its line.

    The start is just after the last sentence break (`SENTENCE_BREAK`) before `\\boxed{`, so "x = 5. So the
    answer is \\boxed{5}." keeps "x = 5. "; decimals ("2.5") do not break. Text without `\\boxed{` is unchanged.
    """
    at = text.rfind(BOXED)
    if at < 0:
        return text
    start = max((m.end() for m in SENTENCE_BREAK.finditer(text, 0, at)), default=0)
    end = text.find("\n", at)
    return text[:start] + (text[end:] if end >= 0 else "")


def reasoning_part(text: str, domain: str | None = None) -> str:
    """What `compare="reasoning"` compares: the think part without its final-answer sentence; code unchanged."""
    if domain == "code":
        return text
    return drop_boxed_sentence(think_part(text))


def compared_texts(texts: Sequence[str], compare: Compare = "response", domains: Sequence | None = None) -> list[str]:
    """The part of each text the distance runs on (`domains`: each text's domain, only read by "reasoning")."""
    if compare not in COMPARES:
        raise ValueError(f"compare must be one of {COMPARES}, got {compare!r}")
    if compare == "think":
        return [think_part(t) for t in texts]
    if compare == "reasoning":
        domains = [None] * len(texts) if domains is None else domains
        return [reasoning_part(t, d) for t, d in zip(texts, domains, strict=True)]
    return list(texts)


def word_token_ids(texts: Sequence[str]) -> list[list[int]]:
    """The fallback tokenizer: `WORD_PATTERN` words mapped to ids in order of first appearance.

    Deterministic and shared across `texts`, so equal words get equal ids within one call (all that
    Levenshtein distance needs). Not a model tokenizer: lengths are words and symbols, not BPE tokens.
    """
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(w, len(vocab)) for w in WORD_PATTERN.findall(t)] for t in texts]


def to_sequences(
    texts: Sequence[str], unit: Unit = "token", tokenizer: Any = None, compare: Compare = "response",
    domains: Sequence | None = None,
) -> list[Sequence]:
    """What the distance runs on: strings (`unit="char"`) or lists of token ids (`unit="token"`).

    `tokenizer`: a Hugging Face tokenizer (special tokens are not added) or None for `word_token_ids`.
    Ignored for `unit="char"`. `compare` and `domains` pick the part compared (`compared_texts`).
    """
    if unit not in ("token", "char"):
        raise ValueError(f"unit must be 'token' or 'char', got {unit!r}")
    texts = compared_texts(texts, compare, domains)
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


def duplicate_of(texts: Sequence[str]) -> dict[int, int]:
    """Each index whose text (whitespace-normalised) an earlier index has → the first index with that text."""
    first: dict[str, int] = {}
    copies = {}
    for i, text in enumerate(texts):
        j = first.setdefault(" ".join(text.split()), i)
        if j != i:
            copies[i] = j
    return copies


def median_ratios(lengths: Sequence[int]) -> np.ndarray:
    """Each length's ratio to the median of `lengths`, taken >= 1 either way (2.0: twice or half the median).

    Lengths below 1 count as 1, so an empty text has a finite ratio.
    """
    if len(lengths) == 0:
        return np.zeros(0)
    n = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
    median = max(float(np.median(lengths)), 1.0)
    return np.maximum(n / median, median / n)


def guarded_farthest_first(dist: np.ndarray, k: int, ratio: np.ndarray, band: float) -> list[int]:
    """`farthest_first` over the indices with `ratio <= band`, filled up to `k` from the rest by lowest ratio.

    Filling keeps the count at min(k, M), so the guard never costs a question a trajectory; the order stays a
    prefix order (all in-band ones come first, then the fill).
    """
    in_band = np.flatnonzero(ratio <= band)
    chosen = in_band[farthest_first(dist[np.ix_(in_band, in_band)], k)].tolist()
    outside = np.flatnonzero(ratio > band)
    fill = outside[np.argsort(ratio[outside], kind="stable")]  # stable: ties to the lowest index
    return chosen + fill[: max(k - len(chosen), 0)].tolist()


@dataclass(frozen=True)
class Selection:
    """The outcome of a diversity selection over M candidates.

    `chosen`: indices in farthest-first order (rank = position). `min_distance[r]`: the minimum distance of
    `chosen[r]` to the other chosen ones (NaN when only one is chosen). `distances`: the full M×M matrix.
    `reasons`: each unchosen index → its reject reason (`REASONS`). `duplicate_of`: with dedupe, each copy →
    the candidate it copies. `lengths`: each compared sequence's length. `length_ratio`: with the guard, each
    index's length ratio to the median (`median_ratios`), else None.
    """

    chosen: list[int]
    min_distance: list[float]
    distances: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)
    duplicate_of: dict[int, int] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)
    length_ratio: np.ndarray | None = None

    @property
    def rank(self) -> dict[int, int]:
        return {idx: r for r, idx in enumerate(self.chosen)}

    @property
    def set_min_distance(self) -> float:
        """The chosen set's minimum pairwise distance: what max-min selection maximises."""
        return min(self.min_distance) if len(self.chosen) > 1 else math.nan


def select_from_distances(
    dist: np.ndarray,
    k: int,
    copies: dict[int, int] | None = None,
    lengths: Sequence[int] = (),
    band: float | None = None,
) -> Selection:
    """Farthest-first selection of `k`; `copies` (from `duplicate_of`) are left out, and with a `band` the
    choice is `guarded_farthest_first` on the `lengths`' `median_ratios`. Without either, plain `farthest_first`."""
    copies = copies or {}
    guarded = band is not None
    length_ratio = median_ratios(lengths) if guarded else None
    pool = np.array([i for i in range(len(dist)) if i not in copies], dtype=np.int64)
    sub = dist[np.ix_(pool, pool)]
    local = guarded_farthest_first(sub, k, length_ratio[pool], band) if guarded else farthest_first(sub, k)
    chosen = pool[local].tolist()
    mins = []
    for idx in chosen:
        others = [o for o in chosen if o != idx]
        mins.append(float(dist[idx, others].min()) if others else math.nan)
    reasons = {}
    for idx in sorted(set(range(len(dist))) - set(chosen)):
        if idx in copies:
            reasons[idx] = DUPLICATE
        elif guarded and length_ratio[idx] > band:
            reasons[idx] = OUTSIDE_LENGTH_BAND
        else:
            reasons[idx] = NOT_SELECTED
    return Selection(chosen=chosen, min_distance=mins, distances=dist, reasons=reasons, duplicate_of=copies,
                     lengths=list(lengths), length_ratio=length_ratio)


def select_diverse_detailed(
    texts: Sequence[str],
    k: int,
    unit: Unit = "token",
    tokenizer: Any = None,
    compare: Compare = "response",
    workers: int = -1,
    dedupe: bool = False,
    length_band: float | None = None,
    domains: Sequence | None = None,
) -> Selection:
    """`select_diverse` that also returns each chosen row's min distance to the others, the matrix and why each
    other row was not chosen. `dedupe` and `length_band` (None = no guard) are the options of the module
    docstring; `domains` (each text's domain) matters only for `compare="reasoning"`."""
    if length_band is not None and not length_band > 1:
        raise ValueError(f"length_band must be > 1, got {length_band!r}")
    compared = compared_texts(texts, compare, domains)
    sequences = to_sequences(compared, unit, tokenizer)
    copies = duplicate_of(compared) if dedupe else None
    lengths = [len(s) for s in sequences]
    return select_from_distances(pairwise_distances(sequences, workers), k, copies, lengths, length_band)


def select_diverse(
    texts: list[str], k: int, unit: str = "token", tokenizer: Any = None, compare: str = "response"
) -> list[int]:
    """Indices of the `k` most mutually distant texts, farthest-first (public contract, DESIGN.md).

    Normalised Levenshtein distance on token ids (`unit="token"`; `tokenizer` = a Hugging Face tokenizer,
    or None for the deterministic word tokenizer `word_token_ids`) or characters (`unit="char"`), on the
    whole text, only its `<think>` part (`compare="think"`) or its reasoning without the `\\boxed{` answer
    sentence (`compare="reasoning"`); greedy max-min selection with ties to the lowest index. Returns all
    indices (in farthest-first order) when k ≥ len(texts). The options (dedupe, length guard) are in
    `select_diverse_detailed`.
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
    `not_selected` (or, with the options, `duplicate` / `outside_length_band`). Row order and all other
    columns are preserved. The `domain` column, when present, is read by `compare="reasoning"`.

    `tokenizer`: a tokenizer object, a model name/path to load one from (the student's, so distances are in
    the tokens the student trains on), or None for the word tokenizer. `dedupe`, `quality_guard` and
    `length_band`: the options of the module docstring (off by default).
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
        dedupe: bool = False,
        quality_guard: bool = False,
        length_band: float = 2.0,
    ) -> None:
        if per_question < 1:
            raise StageError(f"stage 'diversity': per_question must be >= 1, got {per_question}")
        if unit not in ("token", "char") or compare not in COMPARES:
            raise StageError(
                f"stage 'diversity': unit must be token|char and compare one of {COMPARES}, got {unit!r}, {compare!r}"
            )
        if quality_guard and not length_band > 1:
            raise StageError(f"stage 'diversity': length_band must be > 1, got {length_band!r}")
        self.per_question = per_question
        self.unit = unit
        self.compare = compare
        self.workers = workers
        self.dedupe = dedupe
        self.length_band = length_band if quality_guard else None  # None: no guard
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) and unit == "token" else tokenizer

    @classmethod
    def from_config(cls, cfg, tokenizer: Any = None) -> "DiversityStage":
        """Build from `config.DiversityConfig`."""
        return cls(per_question=cfg.per_question, unit=cfg.unit, compare=cfg.compare, tokenizer=tokenizer,
                   dedupe=cfg.dedupe, quality_guard=cfg.quality_guard, length_band=cfg.length_band)

    def select(self, texts: list[str], domains: list | None = None) -> Selection:
        return select_diverse_detailed(texts, self.per_question, self.unit, self.tokenizer, self.compare, self.workers,
                                       dedupe=self.dedupe, length_band=self.length_band, domains=domains)

    def reject_detail(self, selection: Selection, local: int, ids: list[str]) -> str:
        """Why candidate `local` of a question was not kept, for `reject_detail` (`ids`: the rollout ids)."""
        kept = f"kept {len(selection.chosen)} of {len(ids)} correct"
        reason = selection.reasons[local]
        if reason == DUPLICATE:
            return f"{kept}; same {self.compare} text as {ids[selection.duplicate_of[local]]}"
        if reason == OUTSIDE_LENGTH_BAND:
            length, median = selection.lengths[local], float(np.median(selection.lengths))
            return f"{kept}; {self.unit} length {length} vs median {median:g} (band {self.length_band:g})"
        gap = selection.distances[local, selection.chosen].min()
        return f"{kept}; min {self.unit} distance to kept {gap:.4f}"

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        original_index = batch.index
        batch = batch.reset_index(drop=True)  # positions = labels below; the index may repeat across blocks
        n = len(batch)
        rank = np.full(n, -1, dtype=np.int64)
        min_distance = np.full(n, np.nan)
        reason = np.full(n, None, dtype=object)
        detail = np.full(n, None, dtype=object)
        not_rejected = batch[S.REJECT_REASON].isna().to_numpy() if S.REJECT_REASON in batch else np.ones(n, bool)
        candidate = batch[S.VERDICT].eq("correct").fillna(False).to_numpy(dtype=bool) & not_rejected
        responses = batch[S.RESPONSE].fillna("").astype(str).to_numpy()
        groups = pd.Series(np.flatnonzero(candidate)).groupby(batch[S.PROBLEM_ID].to_numpy()[candidate], sort=False)
        # Selection breaks ties by position: order each question's rows by id, so the choice does not depend on
        # how Ray split and ordered the rows (a resumed stage reads its input in another part order).
        ids = batch[S.ROLLOUT_ID].astype(str).to_numpy() if S.ROLLOUT_ID in batch else None
        shown_ids = ids if ids is not None else np.array([f"row {i}" for i in range(n)])
        domains = batch[S.DOMAIN].to_numpy() if S.DOMAIN in batch else None
        for _, positions in groups:
            positions = positions.to_numpy()
            if ids is not None:
                positions = positions[np.argsort(ids[positions], kind="stable")]
            selection = self.select(responses[positions].tolist(),
                                    None if domains is None else domains[positions].tolist())
            for r, (local, dmin) in enumerate(zip(selection.chosen, selection.min_distance)):
                rank[positions[local]] = r
                min_distance[positions[local]] = dmin
            group_ids = shown_ids[positions].tolist()
            for local, why in selection.reasons.items():
                reason[positions[local]] = why
                detail[positions[local]] = self.reject_detail(selection, local, group_ids)
        batch[S.DIVERSITY_RANK] = pd.array([int(r) if r >= 0 else pd.NA for r in rank], dtype="Int64")
        batch[S.DIVERSITY_MIN_DISTANCE] = min_distance
        for why in REASONS:  # always marked, so the reject columns exist even when no row is rejected
            batch = mark_rejected(batch, reason == why, why, pd.Series(detail))
        batch.index = original_index
        return batch
