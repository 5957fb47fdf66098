"""Scoring an evaluation: avg@k pass@1 with its standard error, per benchmark and per split.

For each question i with k verified samples, p_i = correct_i / k. The score is mean(p_i) (pass@1
averaged over k samples: the paper's avg@16) and its standard error is the sample standard deviation of
the p_i divided by sqrt(n questions): questions are the unit of sampling, so this is the error bar that
says how much the score would move on another draw of questions ("Adding Error Bars to Evals", Miller 2024).
With k > 1 it also shrinks the within-question sampling noise.
"""

from __future__ import annotations

import json
import math
from datetime import date

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import ConfigError

# Fields of a problem's `meta` that name a difficulty split, in order of preference.
SPLIT_FIELDS = ("difficulty", "level")


def score_samples(verified: pd.DataFrame) -> dict:
    """Score verified samples of one benchmark: needs problem_id, verdict (and num_tokens when present)."""
    if verified.empty:
        return {"questions": 0, "samples": 0, "avg_at_k": None, "stderr": None}
    correct = (verified[S.VERDICT] == "correct").astype(float)
    per_question = correct.groupby(verified[S.PROBLEM_ID]).agg(["mean", "size"])
    n = len(per_question)
    mean = float(per_question["mean"].mean())
    stderr = float(per_question["mean"].std(ddof=1) / math.sqrt(n)) if n > 1 else None
    result = {
        "questions": n,
        "samples": int(len(verified)),
        "k": int(per_question["size"].min()),
        "avg_at_k": mean,
        "stderr": stderr,
        "statuses": verified[S.VERDICT].value_counts().to_dict(),
    }
    if S.NUM_TOKENS in verified.columns:
        result["mean_tokens"] = float(verified[S.NUM_TOKENS].mean())
    return result


def score_benchmark(verified: pd.DataFrame) -> dict:
    """`score_samples` overall, per difficulty split found in the problems' meta, and per domain when a
    benchmark mixes domains (math and code are not one number)."""
    result = score_samples(verified)
    splits = _split_labels(verified)
    if splits is not None:
        result["splits"] = {
            str(label): score_samples(verified[splits == label]) for label in sorted(splits.dropna().unique())
        }
    if S.DOMAIN in verified.columns and verified[S.DOMAIN].nunique() > 1:
        result["domains"] = {str(d): score_samples(verified[verified[S.DOMAIN] == d])
                             for d in sorted(verified[S.DOMAIN].dropna().unique())}
    return result


def in_date_window(problems: pd.DataFrame, date_from: date | str | None, date_to: date | str | None,
                   benchmark: str = "benchmark") -> tuple[pd.DataFrame, int]:
    """(the problems whose `meta.contest_date` is in [date_from, date_to], how many were outside).

    Dates compare as ISO text by day (`2024-08-03T00:00:00` → `2024-08-03`). A problem with no date cannot
    be placed in the window: that is an error naming the benchmark, not a silent drop.
    """
    if date_from is None and date_to is None:
        return problems, 0
    days = problems[S.META].map(lambda m: str((json.loads(m) if m else {}).get("contest_date") or "")[:10])
    undated = problems.loc[days == "", S.PROBLEM_ID].tolist()
    if undated:
        raise ConfigError(
            f"benchmark {benchmark!r} has a date window but {len(undated)} problems without `contest_date` in "
            f"their meta (e.g. {undated[0]}); use the livecodebench preset (it keeps the release's dates) or "
            "remove date_from/date_to"
        )
    inside = (days >= str(date_from or "")) & (days <= str(date_to or "9999"))  # date's str is ISO
    return problems[inside].reset_index(drop=True), int((~inside).sum())


def _split_labels(verified: pd.DataFrame) -> pd.Series | None:
    if S.META not in verified.columns:
        return None
    metas = verified[S.META].map(lambda m: json.loads(m) if isinstance(m, str) and m else {})
    for field in SPLIT_FIELDS:
        labels = metas.map(lambda m: m.get(field))
        if labels.notna().any():
            return labels.astype("string")
    return None


def format_table(results: dict[str, dict]) -> str:
    """A markdown table: benchmark, questions, k, avg@k ± stderr, mean tokens (splits indented)."""
    lines = ["| benchmark | questions | k | avg@k (pass@1) | ± stderr | mean tokens |", "|---|---|---|---|---|---|"]

    def row(name: str, r: dict) -> str:
        avg = "-" if r.get("avg_at_k") is None else f"{100 * r['avg_at_k']:.1f}%"
        err = "-" if r.get("stderr") is None else f"{100 * r['stderr']:.1f}"
        tokens = "-" if r.get("mean_tokens") is None else f"{r['mean_tokens']:.0f}"
        return f"| {name} | {r.get('questions', 0)} | {r.get('k', '-')} | {avg} | {err} | {tokens} |"

    for name, result in results.items():
        lines.append(row(name, result))
        for group in ("domains", "splits"):
            for label, sub in result.get(group, {}).items():
                lines.append(row(f"  {name} / {label}", sub))
    return "\n".join(lines)


# --- several training seeds ------------------------------------------------------------------------------

Z95 = 1.959964  # two-sided 95% normal quantile


def combine_seeds(results: list[dict]) -> dict:
    """One score from the same benchmark scored after each of several trainings (seeds).

    The mean is the mean of the seeds' avg@k. Its error adds the two sources of noise: the question draw,
    which every seed shares (so more seeds do not shrink it: the mean of the seeds' squared stderr), and the
    training noise, which they do not (the variance of the seed means over the number of seeds)."""
    scores = [r for r in results if r.get("avg_at_k") is not None]
    if not scores:
        return {"questions": 0, "seeds": 0, "avg_at_k": None, "stderr": None}
    means = [r["avg_at_k"] for r in scores]
    n = len(means)
    mean = sum(means) / n
    question_var = sum((r.get("stderr") or 0.0) ** 2 for r in scores) / n
    seed_var = sum((m - mean) ** 2 for m in means) / (n - 1) / n if n > 1 else 0.0
    return {"questions": scores[0].get("questions", 0), "k": scores[0].get("k"), "seeds": n, "avg_at_k": mean,
            "stderr": math.sqrt(question_var + seed_var), "seed_scores": means}


def gap_interval(score: dict, control: dict) -> dict | None:
    """`score` minus `control` (both `combine_seeds` results) with a 95% interval.

    The two errors add as if independent. Both are scored on the same questions, so the question draw is
    partly shared and the interval is conservative (wider than a paired one)."""
    if score.get("avg_at_k") is None or control.get("avg_at_k") is None:
        return None
    gap = score["avg_at_k"] - control["avg_at_k"]
    err = math.sqrt((score.get("stderr") or 0.0) ** 2 + (control.get("stderr") or 0.0) ** 2)
    return {"gap": gap, "stderr": err, "low": gap - Z95 * err, "high": gap + Z95 * err}
