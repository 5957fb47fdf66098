"""Generation steps: teacher rollouts, verification + the correctness filter, student rollouts for pass rates.

Every rollout stage is resumable row by row (`rollout_id`): a rerun generates only the rows not yet written.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from ded_ray import schema as S
from ded_ray.config import DEDConfig, TeacherConfig
from ded_ray.rundir import RunDir
from ded_ray.runner import kept_rows, run_stage
from ded_ray.stages.base import mark_rejected
from ded_ray.stages.correctness import reject_incorrect
from ded_ray.stages.rollout import rollout, student_target
from ded_ray.stages.verify import verify_rows

STAGE_ROLLOUT = (3, "rollout")
STAGE_CORRECTNESS = (4, "correctness")
STAGE_STUDENT_ROLLOUT = (5, "student_rollout")
STAGE_STUDENT_VERIFY = (6, "student_verify")


def in_blocks(table: pa.Table, rows_per_block: int) -> ray.data.Dataset:
    """A Dataset of `table` cut into blocks of `rows_per_block` rows.

    `from_arrow(table)` makes ONE block, and an actor pool gives a block to one actor: the whole stage would
    run on a single actor (the pool never grows, the autoscaler never adds a node) and its rows would reach
    the run directory in one burst at the end instead of part by part.
    """
    size = max(1, int(rows_per_block))
    return ray.data.from_arrow([table.slice(i, size) for i in range(0, max(table.num_rows, 1), size)])


def reject_rollout_errors(batch: pd.DataFrame) -> pd.DataFrame:
    """Rows the engine could not generate are rejected under their own error slug (prompt_too_long, http_4xx…)."""
    errors = batch[S.ERROR] if S.ERROR in batch else pd.Series([None] * len(batch), index=batch.index)
    for reason in sorted({e for e in errors if isinstance(e, str)}):
        batch = mark_rejected(batch, errors.eq(reason), reason)
    return batch


def generate_rollouts(
    run: RunDir, config: DEDConfig, problems: pa.Table, targets: list[TeacherConfig],
    stage: tuple[int, str] = STAGE_ROLLOUT, samples: int | None = None, seed_offset: int = 0,
    reject_errors: bool = True,
) -> pa.Table:
    """M rollouts per (problem, target) into stage `stage`; error rows rejected when `reject_errors`."""

    per_problem = len(targets) * (config.rollout.samples_per_question if samples is None else samples)

    def build(done: set[str]) -> ray.data.Dataset:
        # One block per engine batch: problems x targets x samples rows (fan-out happens per block).
        blocks = in_blocks(problems, config.rollout.batch_size // max(per_problem, 1))
        ds = rollout(blocks, targets, config.rollout, samples=samples,
                     base_seed=config.run.seed + seed_offset, skip_ids=done)
        if reject_errors:
            ds = ds.map_batches(reject_rollout_errors, batch_format="pandas")
        return ds

    return run_stage(run, *stage, build, id_column=S.ROLLOUT_ID, part_rows=config.run.part_rows)


def verify(
    run: RunDir, config: DEDConfig, rollouts: pa.Table, stage: tuple[int, str] = STAGE_CORRECTNESS,
    filter_incorrect: bool = True,
) -> pa.Table:
    """Verdict columns on every kept rollout; with `filter_incorrect`, the paper's length/format/correctness filter."""

    def build(done: set[str]) -> ray.data.Dataset | pa.Table:
        todo = kept_rows(rollouts)
        if done:
            todo = todo.filter(pc.invert(pc.is_in(todo[S.ROLLOUT_ID], pa.array(sorted(done)))))
        if todo.num_rows == 0:
            return todo
        ds = verify_rows(in_blocks(todo, config.verify.batch_size), config.verify, config.student.model)
        if filter_incorrect:
            ds = ds.map_batches(reject_incorrect, batch_format="pandas")
        return ds

    return run_stage(run, *stage, build, id_column=S.ROLLOUT_ID, part_rows=config.run.part_rows)


def student_rollouts(run: RunDir, config: DEDConfig, verified: pa.Table) -> pa.Table | None:
    """k student samples for each question that still has a correct teacher trajectory, verified."""
    if not config.curate.pass_rate.enabled:
        return None
    kept = kept_rows(verified)
    questions = pc.unique(kept[S.PROBLEM_ID])
    problems = kept.filter(pc.is_in(kept[S.PROBLEM_ID], questions)).select(S.PROBLEM_SCHEMA.names)
    problems = pa.Table.from_pandas(problems.to_pandas().drop_duplicates(S.PROBLEM_ID), preserve_index=False)
    rollouts = generate_rollouts(
        run, config, problems, [student_target(config.student)], stage=STAGE_STUDENT_ROLLOUT,
        samples=config.curate.pass_rate.k, seed_offset=1, reject_errors=False,
    )
    return verify(run, config, rollouts, stage=STAGE_STUDENT_VERIFY, filter_incorrect=False)
