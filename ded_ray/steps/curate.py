"""Curation steps: keep hard questions, the P most different trajectories per question, then decontaminate,
mix and write the corpus. Each runs as stages in the run directory (resumable, rejections by reason)."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import ray.data

from ded_ray import schema as S
from ded_ray.config import DEDConfig
from ded_ray.io import read_all_problems
from ded_ray.log import log
from ded_ray.models import resolve_model
from ded_ray.rundir import RunDir
from ded_ray.runner import kept_rows, run_stage
from ded_ray.stages.base import actor_pool
from ded_ray.stages.decontaminate import DecontaminateStage
from ded_ray.stages.diversity import DiversityStage
from ded_ray.stages.mix import MixStage
from ded_ray.stages.pass_rate import PassRateStage, student_pass_rates
from ded_ray.stages.to_sft import build_corpus, write_corpus

STAGE_PASS_RATE = (7, "pass_rate")
STAGE_DIVERSITY = (8, "diversity")
STAGE_DECONTAMINATE = (9, "decontaminate")
STAGE_MIX = (10, "mix")
CORPUS_FILE = "corpus.parquet"


def drop_easy_questions(run: RunDir, config: DEDConfig, verified: pa.Table, student_verified: pa.Table | None) -> pa.Table:
    """Attach the student's pass rate to teacher rows; reject questions it already solves (`too_easy`)."""
    cfg = config.curate.pass_rate

    def build(_done: set[str]) -> pd.DataFrame:
        rows = kept_rows(verified).to_pandas()
        if student_verified is None or student_verified.num_rows == 0:
            rows[S.PASS_RATE] = float("nan")
            return rows
        rates = student_pass_rates(student_verified.to_pandas(), k=cfg.k)
        run.update_manifest(pass_rates={
            "k": cfg.k, "threshold": cfg.threshold, "questions": len(rates),
            "mean": float(rates[S.PASS_RATE].mean()) if len(rates) else None,
        })
        return PassRateStage.from_config(cfg, rates)(rows)

    return run_stage(run, *STAGE_PASS_RATE, build, id_column=None, part_rows=config.run.part_rows)


def keep_diverse(run: RunDir, config: DEDConfig, hard: pa.Table) -> pa.Table:
    """Per question, keep the P farthest correct trajectories (greedy max-min Levenshtein); others `not_selected`."""
    cfg = config.curate.diversity
    tokenizer = str(resolve_model(config.student.model)) if cfg.unit == "token" else None

    def build(_done: set[str]) -> ray.data.Dataset | pa.Table:
        rows = kept_rows(hard)
        if rows.num_rows == 0:
            return rows
        ds = ray.data.from_arrow(rows)
        return ds.groupby(S.PROBLEM_ID).map_groups(
            DiversityStage,
            fn_constructor_kwargs={"per_question": cfg.per_question, "unit": cfg.unit,
                                   "compare": cfg.compare, "tokenizer": tokenizer},
            batch_format="pandas",
            compute=actor_pool(1),
        )

    return run_stage(run, *STAGE_DIVERSITY, build, id_column=None, part_rows=config.run.part_rows)


def finish_corpus(run: RunDir, config: DEDConfig, diverse: pa.Table) -> str:
    """Decontaminate against the eval sets, apply domain quotas, write corpus.parquet; returns its path."""
    clean = _decontaminate(run, config, diverse)
    mixed = _mix(run, config, clean)
    system_prompt = config.student.system_prompt
    sampling = {t.name: t.sampling.model_dump() for t in config.teachers}
    corpus = build_corpus(kept_rows(mixed).to_pandas(), system_prompt=system_prompt, sampling_by_teacher=sampling)
    path = write_corpus(corpus, run.file(CORPUS_FILE))
    run.update_manifest(corpus={"path": str(path), "rows": len(corpus),
                                "questions": int(corpus[S.PROBLEM_ID].nunique()) if len(corpus) else 0})
    record_funnel(run)
    log(f"[corpus] {len(corpus)} trajectories for {corpus[S.PROBLEM_ID].nunique() if len(corpus) else 0} questions → {path}")
    return str(path)


def record_funnel(run: RunDir) -> None:
    """Count where every teacher trajectory went (the paper's Table 3), print it and store it in the manifest."""
    from ded_ray.analysis.run_data import funnel
    from ded_ray.stages.funnel import print_funnel

    counts = funnel(run)
    if not counts.adds_up:  # a bookkeeping bug, never a user error: say so loudly
        raise RuntimeError(f"funnel does not add up: {counts.total} rows != {counts.corpus} + {counts.rejected}")
    run.update_manifest(funnel=counts.to_dict())
    print_funnel(counts)


def eval_items(config: DEDConfig) -> pd.DataFrame:
    """Every item the student is evaluated on: the decontamination sets plus the eval benchmarks."""
    sources = list(config.curate.decontaminate.eval_sets) + [b.source for b in config.eval.benchmarks]
    items, _rejected = read_all_problems(sources) if sources else (pd.DataFrame(columns=S.PROBLEM_SCHEMA.names), None)
    return items


def _decontaminate(run: RunDir, config: DEDConfig, diverse: pa.Table) -> pa.Table:
    def build(_done: set[str]) -> ray.data.Dataset | pd.DataFrame:
        rows = kept_rows(diverse)
        items = eval_items(config)
        if items.empty or rows.num_rows == 0:
            return rows.to_pandas()
        return ray.data.from_arrow(rows).map_batches(
            DecontaminateStage,
            fn_constructor_kwargs={"eval_items": items, "ngram": config.curate.decontaminate.ngram,
                                   "min_words": config.curate.decontaminate.min_words},
            batch_format="pandas",
            compute=actor_pool(1),
        )

    return run_stage(run, *STAGE_DECONTAMINATE, build, id_column=None, part_rows=config.run.part_rows)


def _mix(run: RunDir, config: DEDConfig, clean: pa.Table) -> pa.Table:
    def build(_done: set[str]) -> pd.DataFrame:
        # Quotas are global (a domain's count across all rows), so this one runs on the whole table.
        stage = MixStage.from_config(config.curate.mix)
        rows = stage(kept_rows(clean).to_pandas())
        run.update_manifest(mix=json.loads(json.dumps(stage.report(), default=str)))
        return rows

    return run_stage(run, *STAGE_MIX, build, id_column=None, part_rows=config.run.part_rows)
