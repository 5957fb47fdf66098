"""`ded ablate`: train the student on the corpus after each curation step and compare (the paper's Table 3).

Arms, built from a finished run's stage outputs:
- `all`: every teacher trajectory the engine produced (no filtering);
- `right`: after the length / format / correctness filter;
- `right-hard`: after dropping questions the student already solves;
- `right-hard-diverse`: after diversity selection (and decontamination + mixing: the final corpus);
- `random`: as many trajectories as `right-hard-diverse`, drawn at random (seeded) from `right` — the
  control that says whether the selection, not only the smaller size, made the difference.

Each arm trains with the run's `train` config under `ablate/<arm>/` and is evaluated on `eval.benchmarks`;
finished arms are read back on rerun. An arm with exactly the rows of an earlier one (e.g. `right-hard` when
the student solved no question) reuses that arm's result instead of training the same corpus again. The
table lands in `ablation.json` and the manifest.
"""

from __future__ import annotations

import json

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import DEDConfig
from ded_ray.evaluate import format_table
from ded_ray.log import log
from ded_ray.rundir import RunDir
from ded_ray.runner import kept_rows
from ded_ray.stages.to_sft import build_corpus
from ded_ray.steps.curate import STAGE_DIVERSITY, STAGE_MIX, STAGE_PASS_RATE
from ded_ray.steps.evaluate import evaluate_model, read_eval
from ded_ray.steps.generate import STAGE_CORRECTNESS, STAGE_ROLLOUT

ABLATION_FILE = "ablation.json"
ARMS = ("all", "right", "right-hard", "right-hard-diverse", "random")


def arm_rows(run: RunDir, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The training rows of every arm, from the run's completed stages."""
    stages = {"all": STAGE_ROLLOUT, "right": STAGE_CORRECTNESS, "right-hard": STAGE_PASS_RATE,
              "right-hard-diverse": STAGE_MIX}
    rows = {}
    for arm, stage in stages.items():
        stage_dir = run.stage(*stage)
        if not stage_dir.is_complete():
            raise ValueError(f"ablation needs a finished run: stage {stage_dir.path} is not complete (run `ded run` first)")
        rows[arm] = kept_rows(stage_dir.read()).to_pandas()
    if not run.stage(*STAGE_DIVERSITY).is_complete():
        raise ValueError("ablation needs a finished run: the diversity stage is not complete")
    size = len(rows["right-hard-diverse"])
    pool = rows["right"]
    rows["random"] = pool.sample(n=min(size, len(pool)), random_state=seed) if size else pool.head(0)
    return rows


def identical_arm(arm: str, arms: dict[str, pd.DataFrame]) -> str | None:
    """The first arm before `arm` (in ARMS order) with exactly the same rollouts, if any."""
    ids = set(arms[arm][S.ROLLOUT_ID])
    for earlier in arms:
        if earlier == arm:
            return None
        if set(arms[earlier][S.ROLLOUT_ID]) == ids:
            return earlier
    return None


def ablate(run: RunDir, config: DEDConfig) -> dict:
    from ded_ray.train.trainer import train_student

    results: dict[str, dict] = {}
    base = read_eval(run).get("base", {}).get("benchmarks")
    if base is None:
        base = evaluate_model(run, config, config.student.model, "base", slot=0)
    arms = arm_rows(run, seed=config.run.seed)
    for arm, rows in arms.items():
        twin = identical_arm(arm, arms)
        if twin is not None:
            log(f"[ablate {arm}] the same {len(rows)} rows as {twin}: reusing its result")
            results[arm] = {**results[twin], "same_as": twin}
            continue
        corpus = build_corpus(rows.drop(columns=[S.REJECT_REASON], errors="ignore"),
                              system_prompt=config.student.system_prompt)
        arm_run = RunDir(run.file("ablate"), arm)
        done = read_eval(arm_run).get(arm)
        if done:
            log(f"[ablate {arm}] complete: reusing")
            results[arm] = {"rows": len(corpus), "benchmarks": done["benchmarks"]}
            continue
        if corpus.empty:
            results[arm] = {"rows": 0, "benchmarks": {}, "note": "empty corpus: nothing to train on"}
            continue
        log(f"[ablate {arm}] training on {len(corpus)} trajectories")
        trained = train_student(corpus, config.student.model, config.train, arm_run.path)
        scores = evaluate_model(arm_run, config, trained.student_dir, arm)
        results[arm] = {"rows": len(corpus), "benchmarks": scores}
    summary = {"base": base, "arms": results}
    with run.fs.open_output_stream(run.file(ABLATION_FILE)) as out:
        out.write(json.dumps(summary, indent=2, default=str).encode())
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
