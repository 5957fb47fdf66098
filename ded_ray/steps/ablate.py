"""`ded ablate`: train the student on each Table 3 arm, with several seeds, and compare (the paper's Table 3).

The arms, each decontaminated the way the corpus is (the evaluation items and n-gram rule of the
decontamination stage: the levels before that stage would otherwise train on held-out questions):

- `all`: every rollout (M per question, wrong ones included);
- `right`, `right-hard`: one verified trajectory per question (the first in sample order) of the questions
  at that level — the paper's +Right and +Right-Hard have one response per question (PAPER.md §1.4);
- `right-hard-diverse`: the diversity stage's P per question (the paper's +Right-Hard-Diverse);
- `corpus`: the rows the run's corpus holds (after mixing quotas);
- `random`: as many trajectories as `right-hard-diverse`, drawn at random (per seed) from the pool that
  diversity selected from (every verified trajectory of the hard questions): the control that says whether
  the selection, not only the size, made the difference;
- `diverse-reasoning`, `diverse-dedupe`, `diverse-guard`: diversity selected again from that pool with one
  option of `curate.diversity` turned on (the run's other settings kept), so the options compare in one table.

Each arm trains `seeds` times (the train seed, which also shuffles row order, is `train.seed + i`; the
random control is drawn again per seed) under `ablate/<arm>/seed-<i>/` and is evaluated on `eval.benchmarks`
(`steps.student.train_and_evaluate`: finished trainings are read back on rerun). The table gives each arm's
mean over seeds, an error that combines seeds and questions (`evaluate.combine_seeds`), and its gap to the
random control with a 95% interval. An arm with exactly the rows of an earlier one reuses that arm's result.
For the diversity arms it records which trajectories were picked per question and the min distance each
achieved. The summary lands in `ablation.json` and the manifest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import DEDConfig, DiversityConfig
from ded_ray.evaluate import combine_seeds, gap_interval
from ded_ray.log import log
from ded_ray.rundir import RunDir
from ded_ray.rundir.runner import kept_rows
from ded_ray.stages.decontaminate import EvalIndex
from ded_ray.stages.diversity import DiversityStage
from ded_ray.stages.to_sft import build_corpus
from ded_ray.steps.curate import eval_items
from ded_ray.steps.evaluate import base_scores
from ded_ray.steps.student import train_and_evaluate

ABLATION_FILE = "ablation.json"
RANDOM = "random"
ONE_PER_QUESTION = ("right", "right-hard")
DIVERSE = "right-hard-diverse"
POOL = "right-hard"  # the level diversity selects from, and the random control is drawn from
OPTION_ARMS = {  # arm -> the diversity option it turns on
    "diverse-reasoning": {"compare": "reasoning"},
    "diverse-dedupe": {"dedupe": True},
    "diverse-guard": {"quality_guard": True},
}
ARMS = (*plan.LEVELS, RANDOM, *OPTION_ARMS)
DEFAULT_SEEDS = 3


def arm_rows(
    run: RunDir, seed: int = 0, eval_index: EvalIndex | None = None,
    diversity: DiversityConfig | None = None, tokenizer=None,
) -> dict[str, pd.DataFrame]:
    """The training rows of every arm (in `ARMS` order), from the run's completed stages.

    `seed` draws the random control; `diversity` is the selection the option arms vary (default: the run's
    own `curate.diversity`, from its manifest); `tokenizer` is the one its token distances use."""
    levels = {}
    for level in plan.LEVELS:
        stage_dir = run.stage(plan.level_stage(level))
        if not stage_dir.is_complete():
            raise ValueError(f"ablation needs a finished run: stage {stage_dir.path} is not complete (run `ded run` first)")
        levels[level] = _clean(kept_rows(stage_dir.read()).to_pandas(), eval_index)
    rows = {level: first_per_question(r) if level in ONE_PER_QUESTION else r for level, r in levels.items()}
    pool, size = levels[POOL], len(levels[DIVERSE])
    rows[RANDOM] = pool.sample(n=min(size, len(pool)), random_state=seed).reset_index(drop=True)
    if diversity is None:
        diversity = DiversityConfig(**run.read_manifest().get("config", {}).get("curate", {}).get("diversity", {}))
    for arm, option in OPTION_ARMS.items():
        rows[arm] = select_again(pool, diversity.model_copy(update=option), tokenizer)
    return rows


def first_per_question(rows: pd.DataFrame) -> pd.DataFrame:
    """One trajectory per question: the first in sample order (ties, e.g. several teachers, by rollout id)."""
    order = [c for c in (S.SAMPLE_IDX, S.ROLLOUT_ID) if c in rows]
    return rows.sort_values(order, kind="stable").drop_duplicates(S.PROBLEM_ID).reset_index(drop=True)


def select_again(pool: pd.DataFrame, cfg: DiversityConfig, tokenizer=None) -> pd.DataFrame:
    """The rows the diversity stage keeps from `pool` under `cfg` (in the driver: a pool is a few thousand rows)."""
    if pool.empty:
        return pool
    stage = DiversityStage.from_config(cfg, tokenizer=tokenizer)
    selected = stage(pool.drop(columns=[S.REJECT_REASON, S.REJECT_DETAIL], errors="ignore"))
    return selected[selected[S.REJECT_REASON].isna()].reset_index(drop=True)


def _clean(rows: pd.DataFrame, eval_index: EvalIndex | None) -> pd.DataFrame:
    if eval_index is None or rows.empty:
        return rows
    contaminated = rows[S.QUESTION].map(lambda q: eval_index.match(q) is not None)
    return rows[~contaminated].reset_index(drop=True)


def selection_record(rows: pd.DataFrame) -> dict:
    """Which trajectories a diversity arm picked per question, and the min distance its sets achieved."""
    if rows.empty or S.DIVERSITY_MIN_DISTANCE not in rows:
        return {}
    per_question = rows.groupby(S.PROBLEM_ID)[S.DIVERSITY_MIN_DISTANCE].min().dropna()
    return {
        "mean_min_distance": float(per_question.mean()) if len(per_question) else None,
        "picks": {pid: sorted(ids) for pid, ids in rows.groupby(S.PROBLEM_ID)[S.ROLLOUT_ID].agg(list).items()},
    }


def identical_arm(arm: str, arms: dict[str, pd.DataFrame]) -> str | None:
    """The first arm before `arm` (in arm order) with exactly the same rollouts, if any."""
    ids = set(arms[arm][S.ROLLOUT_ID])
    for earlier in arms:
        if earlier == arm:
            return None
        if set(arms[earlier][S.ROLLOUT_ID]) == ids:
            return earlier
    return None


def ablate(run: RunDir, config: DEDConfig, only: list[str] | None = None, seeds: int = DEFAULT_SEEDS) -> dict:
    """Train and evaluate every arm `seeds` times, or only the arms named in `only` (in arm order)."""
    unknown = sorted(set(only or ()) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown ablation arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    wanted = [arm for arm in ARMS if not only or arm in only]  # gaps need `random` among them
    base = base_scores(run, config)
    items, cfg = eval_items(config), config.curate.decontaminate
    index = EvalIndex(items, cfg.ngram, cfg.min_words) if not items.empty else None
    tokenizer = _tokenizer(config)
    per_seed: dict[str, list[dict]] = {arm: [] for arm in wanted}
    meta: dict[str, dict] = {}
    for i in range(seeds):
        all_arms = arm_rows(run, config.run.seed + i, index, config.curate.diversity, tokenizer)
        arms = {arm: all_arms[arm] for arm in wanted}
        for arm, rows in arms.items():
            meta.setdefault(arm, {"rows": len(rows), "questions": int(rows[S.PROBLEM_ID].nunique()) if len(rows) else 0,
                                  **({"selection": selection_record(rows)} if arm in (DIVERSE, *OPTION_ARMS) else {})})
            twin = identical_arm(arm, arms)
            if twin is not None:
                log(f"[ablate {arm} seed {i}] the same {len(rows)} rows as {twin}: reusing its result")
                meta[arm]["same_as"] = twin
                per_seed[arm].append(per_seed[twin][i])
                continue
            if rows.empty:
                meta[arm]["note"] = "empty corpus: nothing to train on"
                per_seed[arm].append({})
                continue
            corpus = build_corpus(rows.drop(columns=[S.REJECT_REASON], errors="ignore"),
                                  config.student.system_prompt, few_shot=config.student.few_shot)
            log(f"[ablate {arm} seed {i}] {len(corpus)} trajectories")
            train_config = config.train.model_copy(update={"seed": config.train.seed + i})
            trained = train_and_evaluate(run.sub("ablate", arm, f"seed-{i}"), config, corpus, arm, base=base,
                                         train_config=train_config)
            per_seed[arm].append(trained["benchmarks"])
    summary = {"base": base, "seeds": seeds, "arms": _combine(meta, per_seed)}
    run.write_json(ABLATION_FILE, summary)
    run.update_manifest(ablation=summary)
    log("[ablate]\n" + ablation_table(summary))
    return summary


def _tokenizer(config: DEDConfig):
    """The tokenizer the option arms' token distances use: the student's, as in the diversity stage."""
    if config.curate.diversity.unit != "token":
        return None
    from ded_ray.models import resolve_model

    return str(resolve_model(config.student.model))


def _combine(meta: dict[str, dict], per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    """Per arm and benchmark: the seeds' scores combined, and the gap to the random control."""
    results = {}
    for arm, seed_results in per_seed.items():
        benches = sorted({b for r in seed_results for b in r})
        combined = {b: combine_seeds([r[b] for r in seed_results if b in r]) for b in benches}
        results[arm] = {**meta[arm], "benchmarks": combined, "per_seed": seed_results}
    control = results.get(RANDOM, {}).get("benchmarks", {})
    for arm, result in results.items():
        if arm == RANDOM:
            continue
        for bench, score in result["benchmarks"].items():
            if bench in control:
                score["vs_random"] = gap_interval(score, control[bench])
    return results


def _pct(x: float | None) -> str:
    return "-" if x is None or np.isnan(x) else f"{100 * x:.1f}"


def ablation_table(summary: dict) -> str:
    """Markdown: one row per (arm, benchmark), the untrained student first; scores in %, mean over seeds."""
    lines = ["| arm | rows | questions | benchmark | avg@k (mean over seeds) | ± stderr | seeds "
             "| vs random [95% interval] | min distance |", "|---|---|---|---|---|---|---|---|---|"]
    for bench, score in summary["base"].items():
        lines.append(f"| base, untrained | - | - | {bench} | {_pct(score.get('avg_at_k'))}% "
                     f"| {_pct(score.get('stderr'))} | - | - | - |")
    for arm, result in summary["arms"].items():
        name = f"{arm} (= {result['same_as']})" if result.get("same_as") else arm
        distance = result.get("selection", {}).get("mean_min_distance")
        distance = "-" if distance is None else f"{distance:.3f}"
        if not result.get("benchmarks"):
            lines.append(f"| {name} | {result['rows']} | {result['questions']} | - | - | - | - | - | {distance} |")
        for bench, score in result.get("benchmarks", {}).items():
            gap = score.get("vs_random")
            versus = "-" if gap is None else f"{100 * gap['gap']:+.1f} [{100 * gap['low']:+.1f}, {100 * gap['high']:+.1f}]"
            lines.append(f"| {name} | {result['rows']} | {result['questions']} | {bench} | {_pct(score['avg_at_k'])}% "
                         f"| {_pct(score['stderr'])} | {score['seeds']} | {versus} | {distance} |")
    return "\n".join(lines)
