"""Generation steps: teacher rollouts, verification + the correctness filter, student rollouts for pass rates.

Every rollout stage is resumable row by row (`rollout_id`): a rerun generates only the rows not yet written.
Each step takes the previous stage's `StageResult` and returns its own: rows stream from parts to parts.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from ray.data.expressions import col

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import DEDConfig, TeacherConfig
from ded_ray.plan import StageSpec
from ded_ray.ray_helpers import in_blocks
from ded_ray.rundir import RunDir, StageResult, run_stage
from ded_ray.stages.base import mark_rejected
from ded_ray.stages.correctness import reject_incorrect
from ded_ray.stages.rollout import rollout, student_target
from ded_ray.stages.verify import verify_rows


def reject_rollout_errors(batch: pd.DataFrame) -> pd.DataFrame:
    """Rows the engine could not generate are rejected under their own error slug (prompt_too_long, http_4xx…)."""
    errors = batch[S.ERROR] if S.ERROR in batch else pd.Series([None] * len(batch), index=batch.index)
    for reason in sorted({e for e in errors if isinstance(e, str)}):
        batch = mark_rejected(batch, errors.eq(reason), reason)
    return batch


def generate_rollouts(
    run: RunDir, config: DEDConfig, problems: StageResult | pa.Table, targets: list[TeacherConfig],
    stage: StageSpec = plan.ROLLOUT, samples: int | None = None, seed_offset: int = 0, reject_errors: bool = True,
) -> StageResult:
    """M rollouts per (problem, target) into `stage`; error rows rejected when `reject_errors`."""
    per_problem = len(targets) * (config.rollout.samples_per_question if samples is None else samples)
    # Problems are few next to trajectories (one row per question): the driver may hold them.
    table = problems.table(columns=S.PROBLEM_SCHEMA.names) if isinstance(problems, StageResult) else problems

    def build(done: set[str]):
        # One block per engine batch: problems x targets x samples rows (fan-out happens per block).
        blocks = in_blocks(table, config.rollout.batch_size // max(per_problem, 1))
        ds = rollout(blocks, targets, config.rollout, samples=samples,
                     base_seed=config.run.seed + seed_offset, skip_ids=done)
        if reject_errors:
            ds = ds.map_batches(reject_rollout_errors, batch_format="pandas")
        return ds

    return run_stage(run, stage, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)


def verify(
    run: RunDir, config: DEDConfig, rollouts: StageResult, stage: StageSpec = plan.CORRECTNESS,
    filter_incorrect: bool = True,
) -> StageResult:
    """Verdict columns on every kept rollout; with `filter_incorrect`, the paper's length/format/correctness filter."""

    def build(done: set[str]):
        if rollouts.kept == 0:
            return pa.table({})
        ds = rollouts.dataset(rows_per_block=config.verify.batch_size)
        if done:
            ds = ds.filter(expr=col(S.ROLLOUT_ID).not_in(sorted(done)))
        ds = verify_rows(ds, config.verify, config.student.model)
        if filter_incorrect:
            ds = ds.map_batches(reject_incorrect, batch_format="pandas")
        return ds

    return run_stage(run, stage, build, part_rows=config.run.part_rows, retries=config.ray.stage_retries)


def student_rollouts(run: RunDir, config: DEDConfig, right: StageResult, problems: StageResult) -> StageResult | None:
    """k student samples for each question that still has a correct teacher trajectory, verified."""
    if not config.curate.pass_rate.enabled:
        return None
    questions = pc.unique(right.table(columns=[S.PROBLEM_ID])[S.PROBLEM_ID]) if right.kept else pa.array([], pa.string())
    table = problems.table(columns=S.PROBLEM_SCHEMA.names)
    table = table.filter(pc.is_in(table[S.PROBLEM_ID], questions))
    rollouts = generate_rollouts(
        run, config, table, [student_target(config.student)], stage=plan.STUDENT_ROLLOUT,
        samples=config.curate.pass_rate.k, seed_offset=1, reject_errors=False,
    )
    return verify(run, config, rollouts, stage=plan.STUDENT_VERIFY, filter_incorrect=False)
