"""Fan-out: one rollout row per (problem, teacher, sample_idx), each with its own seed.

ray.data.llm keeps only the first completion of `n > 1`, so M samples per question are M rows with
distinct seeds — for every engine, so a result never depends on which engine made it.

The seed of a row is a stable hash (blake2b, not Python's salted `hash()`) of the base seed and the
`rollout_id`: the same run config gives the same seeds on every machine and every restart, a row's seed
does not depend on which other rows exist (adding a teacher or a sample keeps the old seeds), and
different rows get different seeds (63-bit values: collisions are negligible at any realistic size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

import pandas as pd

from ded_ray import schema as S

SEED_BITS = 63  # fits a signed int64 column and every engine's seed argument
# Ray CPUs asked by the light per-row tasks (fan-out, prompt rendering): a small share, so they are
# scheduled beside an engine actor that holds the machine's other CPUs (the vllm engine does the same).
LIGHT_TASK_CPUS = 0.1


def rollout_seed(base_seed: int, rollout_id: str) -> int:
    """A deterministic non-negative 63-bit seed for one rollout row."""
    digest = hashlib.blake2b(f"{base_seed}\x00{rollout_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def fan_out_batch(
    batch: pd.DataFrame,
    teachers: Sequence[str],
    samples: int,
    base_seed: int,
    skip_ids: Collection[str] = (),
) -> pd.DataFrame:
    """Repeat each problem row for every teacher and sample_idx in 0..samples-1.

    Adds `teacher`, `sample_idx`, `seed`, `rollout_id`; keeps every input column. Rows whose rollout_id
    is in `skip_ids` (already written by an earlier run) are left out, so a resumed run generates only
    the missing rows. Raises ValueError on a bad argument or a problem without `problem_id`.
    """
    if samples < 1:
        raise ValueError(f"fan-out: samples must be >= 1, got {samples}")
    if not teachers:
        raise ValueError("fan-out: give at least one teacher name")
    bad = [t for t in teachers if "#" in t]
    if bad:
        raise ValueError(f"fan-out: teacher names {bad} contain '#', the rollout_id separator; rename them")
    if S.PROBLEM_ID not in batch.columns:
        raise ValueError(f"fan-out needs a {S.PROBLEM_ID!r} column; the batch has {sorted(batch.columns)}")
    skip = skip_ids if isinstance(skip_ids, (set, frozenset)) else set(skip_ids)
    n = len(batch)
    reps = len(teachers) * samples
    # Row order: problem-major, then teacher, then sample_idx (repeat each problem `reps` times).
    out = batch.loc[batch.index.repeat(reps)].reset_index(drop=True)
    teacher_col = [t for t in teachers for _ in range(samples)] * n
    sample_col = list(range(samples)) * (len(teachers) * n)
    ids = [S.rollout_id(str(p), t, i) for p, t, i in zip(out[S.PROBLEM_ID], teacher_col, sample_col)]
    out[S.TEACHER] = teacher_col
    out[S.SAMPLE_IDX] = pd.Series(sample_col, dtype="int32")
    out[S.SEED] = pd.Series([rollout_seed(base_seed, rid) for rid in ids], dtype="int64")
    out[S.ROLLOUT_ID] = ids
    if skip:
        out = out[~out[S.ROLLOUT_ID].isin(skip)].reset_index(drop=True)
    return out


def fan_out(problems, teachers: Sequence[str], samples: int, base_seed: int, skip_ids: Collection[str] = ()):
    """Fan out a pandas DataFrame (returns a DataFrame) or a ray Dataset (returns a lazy Dataset).

    See `fan_out_batch` for the columns and the meaning of `skip_ids`.
    """
    teachers = list(teachers)
    if isinstance(problems, pd.DataFrame):
        return fan_out_batch(problems, teachers, samples, base_seed, skip_ids)
    skip = frozenset(skip_ids)
    # Put a large skip set in the object store once instead of pickling it into every task.
    if len(skip) > 10_000:
        import ray

        skip_arg = ray.put(skip)
    else:
        skip_arg = skip
    return problems.map_batches(
        _fan_out_task,
        fn_kwargs={"teachers": teachers, "samples": samples, "base_seed": base_seed, "skip": skip_arg},
        batch_format="pandas",
        num_cpus=LIGHT_TASK_CPUS,
    )


def _fan_out_task(batch: pd.DataFrame, teachers, samples, base_seed, skip) -> pd.DataFrame:
    if not isinstance(skip, frozenset):  # an ObjectRef from `fan_out`
        import ray

        skip = ray.get(skip)
    return fan_out_batch(batch, teachers, samples, base_seed, skip)
