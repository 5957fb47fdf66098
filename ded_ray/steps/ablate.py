"""`ded ablate`: train the student on the rows of each Table 3 level and compare (the paper's Table 3).

One arm per level of the plan (`plan.LEVELS`: all, right, right-hard, right-hard-diverse, corpus), each the
kept rows of the stage that closes the level — the very rows the funnel counts at that level, less those
whose question the decontamination stage would reject (the same evaluation items and n-gram rule) — plus
`random`: as many trajectories as the corpus, drawn at random (seeded) from `right`, the control that says
whether the selection, not only the smaller size, made the difference.

Each arm trains with the run's `train` config under `ablate/<arm>/` and is evaluated on `eval.benchmarks`
(`steps.student.train_and_evaluate`: finished arms are read back on rerun). An arm with exactly the rows of
an earlier one (e.g. `right-hard` when the student solved no question) reuses that arm's result instead of
training the same corpus again. The table lands in `ablation.json` and the manifest.
"""

from __future__ import annotations

import pandas as pd

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import DEDConfig
from ded_ray.evaluate import format_table
from ded_ray.log import log
from ded_ray.rundir import RunDir
from ded_ray.rundir.runner import kept_rows
from ded_ray.stages.decontaminate import EvalIndex
from ded_ray.stages.to_sft import build_corpus
from ded_ray.steps.curate import eval_items
from ded_ray.steps.evaluate import base_scores
from ded_ray.steps.student import train_and_evaluate

ABLATION_FILE = "ablation.json"
RANDOM = "random"
CONTROL_POOL = "right"  # the level the random control is drawn from


def arm_rows(run: RunDir, seed: int = 0, eval_index: EvalIndex | None = None) -> dict[str, pd.DataFrame]:
    """The training rows of every arm, from the run's completed stages.

    With `eval_index` every arm is decontaminated the way the corpus is: the levels before the
    decontamination stage (all, right, right-hard, right-hard-diverse) would otherwise train on evaluation
    questions that the corpus, and so the control it is compared with, never saw."""
    rows = {}
    for level in plan.LEVELS:
        stage_dir = run.stage(plan.level_stage(level))
        if not stage_dir.is_complete():
            raise ValueError(f"ablation needs a finished run: stage {stage_dir.path} is not complete (run `ded run` first)")
        rows[level] = _clean(kept_rows(stage_dir.read()).to_pandas(), eval_index)
    size, pool = len(rows[plan.LEVELS[-1]]), rows[CONTROL_POOL]
    rows[RANDOM] = pool.sample(n=min(size, len(pool)), random_state=seed) if size else pool.head(0)
    return rows


def _clean(rows: pd.DataFrame, eval_index: EvalIndex | None) -> pd.DataFrame:
    if eval_index is None or rows.empty:
        return rows
    contaminated = rows[S.QUESTION].map(lambda q: eval_index.match(q) is not None)
    return rows[~contaminated].reset_index(drop=True)


def identical_arm(arm: str, arms: dict[str, pd.DataFrame]) -> str | None:
    """The first arm before `arm` (in arm order) with exactly the same rollouts, if any."""
    ids = set(arms[arm][S.ROLLOUT_ID])
    for earlier in arms:
        if earlier == arm:
            return None
        if set(arms[earlier][S.ROLLOUT_ID]) == ids:
            return earlier
    return None


ARMS = (*plan.LEVELS, RANDOM)


def ablate(run: RunDir, config: DEDConfig, only: list[str] | None = None) -> dict:
    """Train and evaluate every arm, or only the arms named in `only` (in arm order)."""
    unknown = sorted(set(only or ()) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown ablation arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
    results: dict[str, dict] = {}
    base = base_scores(run, config)
    items, cfg = eval_items(config), config.curate.decontaminate
    index = EvalIndex(items, cfg.ngram, cfg.min_words) if not items.empty else None
    arms = {arm: rows for arm, rows in arm_rows(run, config.run.seed, index).items() if not only or arm in only}
    for arm, rows in arms.items():
        twin = identical_arm(arm, arms)
        if twin is not None:
            log(f"[ablate {arm}] the same {len(rows)} rows as {twin}: reusing its result")
            results[arm] = {**results[twin], "same_as": twin}
            continue
        if rows.empty:
            results[arm] = {"rows": 0, "benchmarks": {}, "note": "empty corpus: nothing to train on"}
            continue
        corpus = build_corpus(rows.drop(columns=[S.REJECT_REASON], errors="ignore"),
                              config.student.system_prompt, few_shot=config.student.few_shot)
        log(f"[ablate {arm}] {len(corpus)} trajectories")
        trained = train_and_evaluate(run.sub("ablate", arm), config, corpus, arm, base=base)
        results[arm] = {"rows": len(corpus), "benchmarks": trained["benchmarks"]}
    summary = {"base": base, "arms": results}
    run.write_json(ABLATION_FILE, summary)
    run.update_manifest(ablation=summary)
    log("[ablate]\n" + ablation_table(summary))
    return summary


def ablation_table(summary: dict) -> str:
    """Markdown: one row per (arm, benchmark), the untrained student first."""
    rows = {f"base, untrained / {bench}": score for bench, score in summary["base"].items()}
    for arm, result in summary["arms"].items():
        same = f", = {result['same_as']}" if result.get("same_as") else ""
        for bench, score in result.get("benchmarks", {}).items():
            rows[f"{arm} ({result['rows']} rows{same}) / {bench}"] = score
    return format_table(rows)
