"""Run one stage into the run directory: skip it when complete, resume it when cut off, count its rows.

`run_stage` is the only place that materialises a stage's output. The stage's work is given as
`build(done_ids) -> Dataset | DataFrame | Table`: a lazy Ray Dataset streams through the driver in parts of
`part_rows` rows, each written atomically, so a killed run loses at most the parts in flight; on rerun
`done_ids` holds the ids already written and `build` leaves them out (row-wise stages), or the stage is
redone whole (`id_column=None`, for stages that group rows).
"""

from __future__ import annotations

import time
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from ded_ray import schema as S
from ded_ray.log import log
from ded_ray.rundir import RunDir, write_batches

StageOutput = ray.data.Dataset | pd.DataFrame | pa.Table


def run_stage(
    run: RunDir,
    index: int,
    name: str,
    build: Callable[[set[str]], StageOutput],
    id_column: str | None,
    part_rows: int = 256,
) -> pa.Table:
    """Complete stage `index`/`name` in `run` and return its whole output (kept and rejected rows)."""
    stage = run.stage(index, name)
    label = f"[{index:02d} {name}]"
    if stage.is_complete():
        table = _dedup(stage.read(), id_column)
        log(f"{label} complete: reusing {table.num_rows} rows")
        return table

    done: set[str] = set()
    if id_column is None:
        stage.reset()
    else:
        done = stage.done_ids(id_column)
        if done:
            log(f"{label} resuming: {len(done)} rows already written")

    started = time.monotonic()
    produced = build(done)
    if isinstance(produced, ray.data.Dataset):
        batches = produced.iter_batches(batch_size=part_rows, batch_format="pyarrow")
    else:
        table = pa.Table.from_pandas(produced, preserve_index=False) if isinstance(produced, pd.DataFrame) else produced
        batches = (table.slice(i, part_rows) for i in range(0, table.num_rows, part_rows))
    written = write_batches(stage, batches, on_part=_progress(label, started))
    seconds = time.monotonic() - started

    table = _dedup(stage.read(), id_column)
    rejected = run.write_rejected(name, table)
    stats = {
        "rows": table.num_rows,
        "new_rows": written,
        "kept": table.num_rows - sum(rejected.values()),
        "rejected": rejected,
        "seconds": round(seconds, 2),
    }
    stage.mark_complete(stats)
    run.update_manifest(stages={name: stats})
    log(f"{label} done: {stats['kept']} kept, {sum(rejected.values())} rejected {rejected or ''} in {seconds:.1f}s")
    return table


def kept_rows(table: pa.Table) -> pa.Table:
    """The rows of a stage output that no stage rejected."""
    if S.REJECT_REASON not in table.column_names:
        return table
    return table.filter(pc.is_null(table[S.REJECT_REASON]))


def _dedup(table: pa.Table, id_column: str | None) -> pa.Table:
    """Keep the first row per id: a part re-written after a crash between write and bookkeeping."""
    if id_column is None or id_column not in table.column_names or table.num_rows == 0:
        return table
    df = table.to_pandas()
    if not df[id_column].duplicated().any():
        return table
    return pa.Table.from_pandas(df.drop_duplicates(id_column).reset_index(drop=True), preserve_index=False)


def _progress(label: str, started: float):
    total = {"rows": 0}

    def on_part(table: pa.Table) -> None:
        total["rows"] += table.num_rows
        elapsed = max(time.monotonic() - started, 1e-6)
        log(f"{label} {total['rows']} rows ({total['rows'] / elapsed:.1f} rows/s)")

    return on_part
