"""`ded bench diversity`: what per-question diversity selection costs, and which way of computing it wins.

Cases (all measured side by side in one run; `ratio` = this case's time / the `baseline` case's time):

- `select M=16 L=<n> unit=token|char`: `select_diverse` end to end (tokenise + rapidfuzz `cdist` on all
  cores + greedy max-min) for one question with 16 trajectories of n tokens. Synthetic trajectories: a
  random base of n words, each trajectory a mutation of it (about 30% of words substituted, inserted or
  deleted), so they look like samples of one question. Tokens are words (the fallback tokenizer), about
  5.5 characters each with the space; a BPE token is about 4 characters, so char/token cost ratios here
  are a little larger than with a model tokenizer.
- `cdist workers=1` vs `cdist workers=-1`: the thread pool's share.
- `pair loop Levenshtein.distance` / `pair loop rapidfuzz single`: the straightforward per-pair Python loop
  over the `Levenshtein` package's `distance` (normalised by hand) or rapidfuzz's single-pair
  `normalized_distance`, same trajectories.
- `python DP`: a textbook pure-Python dynamic program, on a small case only (it is ~1000x slower).
- `growth M=<m>`: cdist + selection time as the number of trajectories per question grows (quadratic in M:
  M(M-1)/2 pairs); `metric=per_pair_ms` shows the cost per pair stays flat.
- `real traces`: the 289 questions × 10 seeds of the Thought Anchors R1-Distill traces (when the file is
  present beside the checkout): questions/s for token and char units, and the distance distribution.
"""

from __future__ import annotations

import json
import os
import random
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ded_ray.bench.common import result_row, shared_data_file
from ded_ray.stages.diversity import (
    farthest_first,
    pairwise_distances,
    select_diverse,
    select_diverse_detailed,
    to_sequences,
)

BENCH = "diversity"
TRACES = Path("reasoning_traces_thought_anchors") / "traces_by_problem.jsonl"


_row = partial(result_row, BENCH)


def _time(fn: Callable[[], object], repeat: int) -> float:
    """Best wall-clock seconds of `repeat` runs (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def synthetic_question(m: int, n_tokens: int, seed: int = 0, edit_rate: float = 0.3) -> list[str]:
    """`m` trajectories of about `n_tokens` words: mutations of one random base text."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(5000)]
    base = [rng.choice(vocab) for _ in range(n_tokens)]
    out = []
    for _ in range(m):
        words = []
        for w in base:
            r = rng.random()
            if r < edit_rate / 3:
                continue  # delete
            if r < 2 * edit_rate / 3:
                words.append(rng.choice(vocab))  # substitute
                continue
            if r < edit_rate:
                words.append(rng.choice(vocab))  # insert before
            words.append(w)
        out.append(" ".join(words))
    return out


def python_dp_distance(a, b) -> float:
    """Textbook O(len(a)·len(b)) Levenshtein, normalised by the longer length (reference for the bench)."""
    if not a and not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1] / max(len(a), len(b))


def _pair_loop(seqs, distance: Callable) -> np.ndarray:
    m = len(seqs)
    dist = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            dist[i, j] = dist[j, i] = distance(seqs[i], seqs[j])
    return dist


def _levenshtein_pkg_normalized(a, b) -> float:
    import Levenshtein  # the `Levenshtein` package (python-Levenshtein's successor)

    longest = max(len(a), len(b))
    return Levenshtein.distance(a, b) / longest if longest else 0.0


def _selection_cases(lengths: list[int], m: int, repeat: int, char_lengths: list[int]) -> list[dict]:
    rows = []
    for n in lengths:
        texts = synthetic_question(m, n, seed=n)
        tag = f"M={m} L={n}"
        t_tok = _time(lambda: select_diverse(texts, 4, unit="token"), repeat)
        rows.append(_row(f"select {tag} unit=token", "seconds_per_question", t_tok, "s",
                         note=f"{len(to_sequences(texts)[0])} tokens, {len(texts[0])} chars per trajectory"))
        if n in char_lengths:
            t_chr = _time(lambda: select_diverse(texts, 4, unit="char"), repeat)
            rows.append(_row(f"select {tag} unit=char", "seconds_per_question", t_chr, "s",
                             baseline=f"select {tag} unit=token", base_value=t_tok))
        seqs = to_sequences(texts, "token")
        t_all = _time(lambda: pairwise_distances(seqs, workers=-1), repeat)
        t_one = _time(lambda: pairwise_distances(seqs, workers=1), repeat)
        rows.append(_row(f"cdist {tag} token workers=-1", "seconds", t_all, "s", note=f"{os.cpu_count()} cores"))
        rows.append(_row(f"cdist {tag} token workers=1", "seconds", t_one, "s",
                         baseline=f"cdist {tag} token workers=-1", base_value=t_all))
    return rows


def _pair_loop_cases(n: int, m: int, repeat: int) -> list[dict]:
    from rapidfuzz.distance import Levenshtein as RL

    seqs = to_sequences(synthetic_question(m, n, seed=n), "token")
    tag = f"M={m} L={n} token"
    base = f"cdist {tag} workers=-1"
    t_cdist = _time(lambda: pairwise_distances(seqs, workers=-1), repeat)
    rows = [_row(base, "seconds", t_cdist, "s")]
    try:
        t_lev = _time(lambda: _pair_loop(seqs, _levenshtein_pkg_normalized), repeat)
        rows.append(_row(f"pair loop Levenshtein.distance {tag}", "seconds", t_lev, "s", baseline=base, base_value=t_cdist))
    except ImportError:
        rows.append(_row(f"pair loop Levenshtein.distance {tag}", "seconds", None, "s",
                         note="skipped: pip install Levenshtein"))
    t_rf = _time(lambda: _pair_loop(seqs, RL.normalized_distance), repeat)
    rows.append(_row(f"pair loop rapidfuzz single {tag}", "seconds", t_rf, "s", baseline=base, base_value=t_cdist))
    return rows


def _dp_case(n: int, m: int) -> list[dict]:
    seqs = to_sequences(synthetic_question(m, n, seed=7), "token")
    tag = f"M={m} L={n} token"
    t_cdist = _time(lambda: pairwise_distances(seqs, workers=-1), 5)
    t_dp = _time(lambda: _pair_loop(seqs, python_dp_distance), 1)
    same = np.allclose(_pair_loop(seqs, python_dp_distance), pairwise_distances(seqs))
    return [
        _row(f"cdist {tag} (small)", "seconds", t_cdist, "s"),
        _row(f"python DP {tag}", "seconds", t_dp, "s", baseline=f"cdist {tag} (small)", base_value=t_cdist,
             note=f"same distances as rapidfuzz: {same}"),
    ]


def _growth_cases(ms: list[int], n: int, repeat: int) -> list[dict]:
    rows = []
    for m in ms:
        seqs = to_sequences(synthetic_question(m, n, seed=m), "token")
        t = _time(lambda: farthest_first(pairwise_distances(seqs), 4), repeat)
        pairs = m * (m - 1) // 2
        rows.append(_row(f"growth M={m} L={n} token", "seconds_per_question", t, "s", note=f"{pairs} pairs"))
        rows.append(_row(f"growth M={m} L={n} token", "per_pair_ms", 1000 * t / pairs, "ms"))
    return rows


def _real_trace_cases(path: Path, limit: int | None) -> list[dict]:
    questions = []
    with path.open() as fh:
        for line in fh:
            item = json.loads(line)
            traces = item["traces"] if isinstance(item["traces"], list) else json.loads(item["traces"])
            questions.append([t["completion"] for t in traces])
            if limit and len(questions) >= limit:
                break
    rows = []
    chars = [len(t) for q in questions for t in q]
    note = f"{len(questions)} questions x {len(questions[0])} traces, median {int(np.median(chars))} chars"
    per_unit = {}
    for unit in ("token", "char"):
        start = time.perf_counter()
        dists = [select_diverse_detailed(texts, 4, unit=unit).distances for texts in questions]
        seconds = time.perf_counter() - start
        per_unit[unit] = seconds
        rows.append(_row(f"real traces unit={unit}", "questions_per_s", len(questions) / seconds, "questions/s",
                         note=note))
        upper = np.concatenate([d[np.triu_indices(len(d), 1)] for d in dists])
        rows.append(_row(f"real traces unit={unit}", "median_pair_distance", float(np.median(upper)), "normalised"))
    rows.append(_row("real traces unit=char", "seconds_total", per_unit["char"], "s",
                     baseline="real traces unit=token", base_value=per_unit["token"]))
    rows.append(_row("real traces unit=token", "seconds_total", per_unit["token"], "s"))
    return rows



def shared_traces_path() -> Path | None:
    return shared_data_file(str(TRACES))


def run(quick: bool = False) -> list[dict]:
    """All cases; `quick` shrinks lengths and counts so it finishes in well under a minute on 2 cores."""
    if quick:
        rows = _selection_cases([500, 1000, 2000], m=16, repeat=2, char_lengths=[500, 1000, 2000])
        rows += _pair_loop_cases(1000, m=16, repeat=1)
        rows += _dp_case(60, m=6)
        rows += _growth_cases([4, 8, 16, 32], n=500, repeat=2)
        limit = 20
    else:
        rows = _selection_cases([4000, 8000, 16000], m=16, repeat=1, char_lengths=[4000, 8000, 16000])
        rows += _pair_loop_cases(4000, m=16, repeat=1)
        rows += _dp_case(200, m=16)
        rows += _growth_cases([4, 8, 16, 32, 64], n=2000, repeat=1)
        limit = None
    path = shared_traces_path()
    if path is None:
        rows.append(_row("real traces", "questions_per_s", None, "questions/s",
                         note=f"skipped: {TRACES} not found (set DED_SHARED_DATA)"))
    else:
        rows += _real_trace_cases(path, limit)
    return rows


if __name__ == "__main__":  # python -m ded_ray.bench.diversity [--quick]
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
