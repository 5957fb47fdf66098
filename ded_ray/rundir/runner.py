"""Run one plan stage into the run directory: skip it when complete, resume it when cut off, count its rows.

`run_stage(run, spec, build)` is the only place a stage's output is written. `build(done_ids)` returns the
stage's work:
- a lazy Ray Dataset: Ray Data's workers write it part by part (`_write_parts`), and the driver receives
  one small summary per part — the stage's rows never pass through the driver;
- or a DataFrame / Table the driver already holds (the problems it read, a small grouped result).

Each part is written atomically under a name derived from its row ids, with its rejected rows copied under
`rejected/<stage>/<reason>/` by the same name, so a retried task rewrites its part instead of adding a
second copy. On rerun `done_ids` holds the ids already written and `build` leaves them out (row-wise
stages), or the stage is redone whole (grouped stages). The result is a `StageResult`: counts, and the rows
as a Dataset read lazily from the parts, for the next stage.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from ded_ray import schema as S
from ded_ray.log import log
from ded_ray.plan import StageSpec
from ded_ray.ray_helpers import in_blocks
from ded_ray.rundir.folders import RunDir, StageDir, part_name

StageOutput = ray.data.Dataset | pd.DataFrame | pa.Table
SMALL_STAGE_ROWS = 4096  # up to this many rows a stage's next step gets it from the driver (see `dataset`)


@dataclass
class StageResult:
    """A finished stage: its counts, and its rows on disk (read lazily, never held by the driver)."""

    run: RunDir
    spec: StageSpec
    rows: int
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.rows - sum(self.rejected.values())

    @property
    def folder(self) -> StageDir:
        return self.run.stage(self.spec)

    def dataset(self, kept_only: bool = True, rows_per_block: int | None = None) -> ray.data.Dataset:
        """The stage's rows as a lazy Dataset (only the rows no stage rejected, unless `kept_only=False`).

        `rows_per_block` re-cuts the parts into smaller blocks, so an actor pool downstream gets one block
        per actor instead of one part (of `run.part_rows` rows) per actor.
        """
        parts = self.folder.parts()
        if not parts:
            raise ValueError(f"stage {self.spec.folder} of {self.run.uri} has no rows; check `.rows` first")
        if self.rows <= SMALL_STAGE_ROWS:
            # Ray Data's file listing asks for a whole CPU, which a 2-CPU laptop Ray whose CPUs the actor pools
            # and Serve replicas hold never has free (the smoke test's verify hung there). A small stage is
            # handed on from the driver instead; a large one always streams from its parts.
            return in_blocks(self.table(kept_only=kept_only), rows_per_block or 256)
        # num_cpus=0 throughout: reading and re-cutting parts is I/O, and must never wait for CPUs that actor
        # pools downstream (or Serve replicas beside them) already hold — on a small machine it would hang.
        ds = ray.data.read_parquet(parts, filesystem=self.run.fs, num_cpus=0)
        if kept_only and self.rejected:
            ds = ds.filter(expr=ray.data.expressions.col(S.REJECT_REASON).is_null(), num_cpus=0)
        if rows_per_block:
            ds = ds.map_batches(_as_is, batch_size=max(1, int(rows_per_block)), batch_format="pyarrow", num_cpus=0)
        return ds

    def table(self, columns: list[str] | None = None, kept_only: bool = True) -> pa.Table:
        """The stage's rows (or some `columns` of them) in the driver: for small reads only — ids, verdicts,
        per-question counts — or small stages (a smoke test's answers, an evaluation's verdicts)."""
        wanted = None
        if columns is not None:
            wanted = list(dict.fromkeys([*columns, *([S.REJECT_REASON] if kept_only and self.rejected else [])]))
        table = self.folder.read(columns=wanted)
        if kept_only:
            table = kept_rows(table)
        return table.select(columns) if columns is not None and table.num_rows else table


def run_stage(run: RunDir, spec: StageSpec, build: Callable[[set[str]], StageOutput], part_rows: int = 256,
              retries: int = 0) -> StageResult:
    """Complete stage `spec` in `run` and return its result (counts, and its rows on disk).

    When the stage fails because Ray lost a worker, an actor or a node (`lost_worker`), it is run again from
    its written parts, up to `retries` times, in this process: the job survives a lost node without being
    resubmitted. Any other failure (a bug, bad input, an actor whose constructor raised) fails at once.
    """
    stage = run.stage(spec)
    label = f"[{spec.number:02d} {spec.name}]"
    if stage.is_complete():
        result = _result(run, spec)
        log(f"{label} complete: reusing {result.rows} rows")
        return result
    attempt = 0
    while True:
        try:
            return _run_once(run, spec, build, part_rows, label)
        except Exception as exc:
            lost = lost_worker(exc)
            attempt += 1
            if lost is None or attempt > retries:
                raise
            redo = ("redone whole" if spec.resume_column is None
                    else f"{stage.num_rows()} rows written are kept, the rest is redone")
            log(f"{label} lost {lost}; {redo} (retry {attempt}/{retries})")


def _run_once(run: RunDir, spec: StageSpec, build: Callable[[set[str]], StageOutput], part_rows: int,
              label: str) -> StageResult:
    stage = run.stage(spec)
    done: set[str] = set()
    if spec.resume_column is None:
        stage.reset()
        run.delete_rejected(spec.name)
    else:
        done = stage.done_ids(spec.resume_column)
        if done:
            log(f"{label} resuming: {len(done)} rows already written")

    started = time.monotonic()
    produced = build(done)
    progress = _Progress(label, started)
    if isinstance(produced, ray.data.Dataset):
        # num_cpus=0: writing a part is I/O, and must not wait for the CPUs an engine pool upstream holds.
        summaries = produced.map_batches(_write_parts, batch_size=part_rows, batch_format="pyarrow",
                                         fn_kwargs={"run": run, "spec": spec}, num_cpus=0)
        for summary in summaries.iter_rows():  # one small row per part, as parts land
            progress(summary["rows"])
    else:
        table = pa.Table.from_pandas(produced, preserve_index=False) if isinstance(produced, pd.DataFrame) else produced
        for i in range(0, table.num_rows, part_rows):
            part = table.slice(i, part_rows)
            _write_part(run, spec, part)
            progress(part.num_rows)
    seconds = time.monotonic() - started

    run.prune_rejected(spec.name, stage.parts())
    result = _result(run, spec)
    _check_unique(stage, spec)
    stats = {"rows": result.rows, "new_rows": progress.rows, "kept": result.kept, "rejected": result.rejected,
             "seconds": round(seconds, 2)}
    stage.mark_complete(stats)
    run.update_manifest(stages={spec.name: stats})
    log(f"{label} done: {result.kept} kept, {sum(result.rejected.values())} rejected {result.rejected or ''} "
        f"in {seconds:.1f}s")
    return result


def lost_worker(exc: BaseException) -> str | None:
    """What Ray lost, when `exc` (or an error it wraps) says a worker process, actor, node or object is gone;
    None for anything else. An actor whose constructor raised is a bug (it would fail again), not a loss."""
    from ray import exceptions as rex

    lost_types = (rex.NodeDiedError, rex.WorkerCrashedError, rex.ObjectLostError, rex.OutOfMemoryError)
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if (isinstance(error, rex.RayActorError) and not error.actor_init_failed) or isinstance(error, lost_types):
            text = str(error).strip()
            return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"
        pending += [error.__cause__, error.__context__, getattr(error, "cause", None)]
    return None


def _as_is(batch: pa.Table) -> pa.Table:
    """Identity: with map_batches' batch_size it re-cuts blocks to that many rows."""
    return batch


def kept_rows(table: pa.Table) -> pa.Table:
    """The rows of a stage output that no stage rejected."""
    if S.REJECT_REASON not in table.column_names:
        return table
    return table.filter(pc.is_null(table[S.REJECT_REASON]))


# --- writing parts (on Ray Data's workers, or in the driver for tables it holds) -------------------------


def _write_parts(batch: pa.Table, run: RunDir, spec: StageSpec) -> pa.Table:
    """map_batches function: write one part and its rejected rows; return only its counts."""
    rejected = _write_part(run, spec, batch)
    return pa.table({"rows": [batch.num_rows], "rejected": [json.dumps(rejected)]})


def _write_part(run: RunDir, spec: StageSpec, table: pa.Table) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    ids = table[spec.id_column].to_pylist() if spec.id_column in table.column_names else [uuid.uuid4().hex]
    name = part_name(ids)
    # Rejects first: a part on disk means "these rows are done", so its rejected copies must already exist.
    rejected = run.write_rejected(spec.name, table, part=name)
    run.stage(spec).write_part(table, name=name)
    return rejected


def _result(run: RunDir, spec: StageSpec) -> StageResult:
    rejected = {reason: rows for reason, rows in run.rejected_counts(only=spec.name).get(spec.name, {}).items()}
    return StageResult(run, spec, rows=run.stage(spec).num_rows(), rejected=rejected)


def _check_unique(stage: StageDir, spec: StageSpec) -> None:
    """Every id once: a duplicate would mean a part was written twice under two names (a bookkeeping bug)."""
    if not stage.parts():
        return
    ids = stage.read(columns=[spec.id_column])[spec.id_column]
    if pc.count_distinct(ids).as_py() != len(ids):
        raise RuntimeError(f"stage {stage.path} holds duplicated {spec.id_column}s: a part was written twice; "
                           "delete the folder and rerun to redo the stage")


class _Progress:
    """Rows written and rows/s, printed as parts land."""

    def __init__(self, label: str, started: float):
        self.label, self.started, self.rows = label, started, 0

    def __call__(self, rows: int) -> None:
        self.rows += rows
        elapsed = max(time.monotonic() - self.started, 1e-6)
        log(f"{self.label} {self.rows} rows ({self.rows / elapsed:.1f} rows/s)")
