"""Curation steps: quality filters, keep hard questions, the P most different trajectories per question, then
decontaminate, mix and write the corpus. Each runs as a plan stage in the run directory (resumable,
rejections by reason); each takes the previous stage's `StageResult` and streams its rows into the next.
"""

from __future__ import annotations

from functools import reduce

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import DEDConfig
from ded_ray.errors import UserError
from ded_ray.io import read_all_problems
from ded_ray.log import log
from ded_ray.models import resolve_model
from ded_ray.plan import StageSpec
from ded_ray.ray_helpers import on_actors
from ded_ray.rundir import RunDir, StageResult, run_stage
from ded_ray.stages.base import mark_rejected
from ded_ray.stages.decontaminate import DecontaminateStage, EvalIndex
from ded_ray.stages.diversity import DiversityStage
from ded_ray.stages.mix import OVER_QUOTA, MixStage
from ded_ray.stages.pass_rate import PassRateStage, student_pass_rates
from ded_ray.stages.to_sft import CORPUS_FILE, build_corpus, corpus_table


def _map_stage(config: DEDConfig, source: StageResult, stage_class, **kwargs):
    """`source`'s kept rows through `stage_class` on Ray Data, scheduled from `curate.concurrency/batch_size`."""
    cfg = config.curate
    return on_actors(
        source.dataset(rows_per_block=cfg.batch_size).map_batches, stage_class, cfg.concurrency,
        fn_constructor_kwargs=kwargs, batch_format="pandas", batch_size=cfg.batch_size,
    )


def _nothing_to_do(source: StageResult) -> pa.Table | None:
    """An empty output for a stage whose input has no kept rows (Ray Data cannot read zero parts)."""
    return pa.table({}) if source.kept == 0 else None


# --- quality filters (the plan's FILTERS: repetition, …) ----------------------------------------------


class _ConfiguredFilter:
    """A plan filter's stage class built from its config section in the actor (`runs.from_config(cfg)`)."""

    def __init__(self, stage: StageSpec, section) -> None:
        self.stage = stage.runs.from_config(section) if section.enabled else None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return batch if self.stage is None else self.stage(batch)


def quality_filters(run: RunDir, config: DEDConfig, verified: StageResult) -> StageResult:
    """Every quality filter of the plan in order, each a row-wise stage of its own; returns the last."""
    rows = verified
    for stage in plan.QUALITY_FILTERS:
        section = reduce(getattr, stage.config.split("."), config)

        def build(done: set[str], source=rows, stage=stage, section=section):
            return _nothing_to_do(source) or _map_stage(config, source, _ConfiguredFilter, stage=stage,
                                                        section=section)

        rows = run_stage(run, stage, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)
    return rows


# --- pass rate, diversity ------------------------------------------------------------------------------


def drop_easy_questions(run: RunDir, config: DEDConfig, right: StageResult, student: StageResult | None) -> StageResult:
    """Attach the student's pass rate to teacher rows; reject questions it already solves (`too_easy`)."""
    cfg = config.curate.pass_rate

    def build(_done: set[str]):
        if student is None or student.rows == 0:
            rates = pd.DataFrame({S.PROBLEM_ID: [], S.PASS_RATE: []})
        else:  # one verdict per student rollout: small columns, read in the driver
            rates = student_pass_rates(student.table(columns=[S.PROBLEM_ID, S.VERDICT], kept_only=False).to_pandas(),
                                       k=cfg.k)
            run.update_manifest(pass_rates={
                "k": cfg.k, "threshold": cfg.threshold, "questions": len(rates),
                "mean": float(rates[S.PASS_RATE].mean()) if len(rates) else None,
            })
        return _nothing_to_do(right) or _map_stage(config, right, PassRateStage, pass_rates=rates,
                                                   threshold=cfg.threshold)

    return run_stage(run, plan.PASS_RATE, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)


def keep_diverse(run: RunDir, config: DEDConfig, hard: StageResult) -> StageResult:
    """Per question, keep the P farthest correct trajectories (greedy max-min Levenshtein); others `not_selected`
    (with the options also `duplicate` / `outside_length_band`)."""
    cfg = config.curate.diversity
    tokenizer = str(resolve_model(config.student.model)) if cfg.unit == "token" else None

    def build(_done: set[str]):
        if hard.kept == 0:
            return pa.table({})
        return on_actors(
            hard.dataset().groupby(S.PROBLEM_ID).map_groups, DiversityStage, config.curate.concurrency,
            fn_constructor_kwargs={"per_question": cfg.per_question, "unit": cfg.unit,
                                   "compare": cfg.compare, "tokenizer": tokenizer, "dedupe": cfg.dedupe,
                                   "quality_guard": cfg.quality_guard, "length_band": cfg.length_band},
            batch_format="pandas",
        )

    return run_stage(run, plan.DIVERSITY, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)


# --- decontamination, mixing, the corpus ---------------------------------------------------------------


def eval_items(config: DEDConfig) -> pd.DataFrame:
    """Every item the student is evaluated on: the decontamination sets plus the eval benchmarks."""
    sources = list(config.curate.decontaminate.eval_sets) + [b.source for b in config.eval.benchmarks]
    items, _rejected = read_all_problems(sources) if sources else (pd.DataFrame(columns=S.PROBLEM_SCHEMA.names), None)
    return items


def decontaminate(run: RunDir, config: DEDConfig, diverse: StageResult) -> StageResult:
    """Reject training rows whose question shares an n-word run with an evaluation item (`contaminated`)."""
    cfg = config.curate.decontaminate

    def build(_done: set[str]):
        items = eval_items(config)
        if items.empty:  # nothing to compare against: every row passes
            return _nothing_to_do(diverse) or diverse.dataset()
        return _nothing_to_do(diverse) or _map_stage(config, diverse, DecontaminateStage, eval_items=items,
                                                     ngram=cfg.ngram, min_words=cfg.min_words)

    return run_stage(run, plan.DECONTAMINATE, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)


def mix(run: RunDir, config: DEDConfig, clean: StageResult) -> StageResult:
    """Domain quotas (`over_quota`). A quota is global, so the choice is made in the driver on the rows' ids
    and domains alone; the rows themselves stream from the last stage's parts into this one's."""
    cfg = config.curate.mix

    def build(_done: set[str]):
        if clean.kept == 0:
            return pa.table({})
        stage = MixStage.from_config(cfg)
        marked = stage(clean.table(columns=[S.ROLLOUT_ID, S.PROBLEM_ID, S.DOMAIN]).to_pandas())
        run.update_manifest(mix=stage.report())
        over = marked[marked[S.REJECT_REASON].notna()] if S.REJECT_REASON in marked else marked.head(0)
        surplus = dict(zip(over[S.ROLLOUT_ID], over[S.REJECT_DETAIL]))
        return clean.dataset().map_batches(_reject_surplus, fn_kwargs={"surplus": surplus}, batch_format="pandas")

    return run_stage(run, plan.MIX, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)


def _reject_surplus(batch: pd.DataFrame, surplus: dict[str, str]) -> pd.DataFrame:
    detail = batch[S.ROLLOUT_ID].map(surplus)
    return mark_rejected(batch.copy(), detail.notna(), OVER_QUOTA, detail)


def check_disjoint(config: DEDConfig, mixed: StageResult) -> None:
    """Fail the run when an evaluation question is still among the corpus's questions after decontamination
    (a reused stage from before a benchmark was added, say): a held-out score would then measure recall."""
    items = eval_items(config)
    if items.empty or not mixed.kept:
        return
    cfg = config.curate.decontaminate
    index = EvalIndex(items, cfg.ngram, cfg.min_words)
    questions = pd.unique(mixed.table(columns=[S.QUESTION])[S.QUESTION].to_pandas())
    leaks = [(q, hit[0]) for q in questions if (hit := index.match(q)) is not None]
    if leaks:
        shown = "; ".join(f"{q!r} ~ {item}" for q, item in leaks[:3])
        raise UserError(f"{len(leaks)} corpus question(s) are evaluation items after decontamination ({shown}). "
                        f"Fix: delete {plan.DECONTAMINATE.folder}/ and the stage folders after it in {mixed.run.uri} "
                        "to redo them, or exclude the benchmark's questions from the problems")


def write_corpus(run: RunDir, config: DEDConfig, mixed: StageResult) -> str:
    """corpus.parquet from the final stage's kept rows (streamed batch by batch); returns its path."""
    check_disjoint(config, mixed)
    path = run.file(CORPUS_FILE)
    sampling = {t.name: t.sampling.model_dump() for t in config.teachers}
    rows = questions = 0
    with pq.ParquetWriter(path, S.CORPUS_SCHEMA, filesystem=run.fs) as out:
        if mixed.kept:
            seen: set[str] = set()
            for batch in mixed.dataset().iter_batches(batch_size=config.run.part_rows, batch_format="pandas"):
                corpus = build_corpus(batch, config.student.system_prompt, sampling, config.student.few_shot)
                out.write_table(corpus_table(corpus))
                rows += len(corpus)
                seen.update(corpus[S.PROBLEM_ID])
            questions = len(seen)
    run.update_manifest(corpus={"path": path, "rows": rows, "questions": questions})
    record_funnel(run)
    log(f"[corpus] {rows} trajectories for {questions} questions → {path}")
    return path


def record_funnel(run: RunDir) -> None:
    """Count where every teacher trajectory went (the paper's Table 3), print it and store it in the manifest."""
    from ded_ray.analysis.funnel import print_funnel
    from ded_ray.analysis.run_data import funnel

    counts = funnel(run)
    if not counts.adds_up:  # a bookkeeping bug, never a user error: say so loudly
        raise RuntimeError(f"funnel does not add up: {counts.total} rows != {counts.corpus} + {counts.rejected}")
    run.update_manifest(funnel=counts.to_dict())
    print_funnel(counts)
