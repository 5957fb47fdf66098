"""Ray Data scheduling helpers shared by engines and stages.

Engines and stages compute; these turn their config (pool sizes) into Ray Data's scheduling arguments, so
that neither package imports the other for them. Ray is imported when a helper is called, not here.
"""

from __future__ import annotations

import warnings


def actor_pool(size: int | tuple[int, int]):
    """Ray Data's compute strategy for a stage class: `size` actors, or an autoscaling (min, max) pool.

    (Ray 2.51+ deprecates map_batches' `concurrency=` argument in favour of `compute=`.)
    """
    from ray.data import ActorPoolStrategy

    lo, hi = (size, size) if isinstance(size, int) else size
    return ActorPoolStrategy(min_size=int(lo), max_size=int(hi))


def on_actors(map_fn, stage_class, size: int | tuple[int, int], **kwargs):
    """`map_fn(stage_class, ...)` (a Dataset's `map_batches` or grouped data's `map_groups`) on a pool of `size`
    actors that Ray does not restart.

    An actor that dies (OOM kill, segfault, lost node) fails the stage, and `rundir.run_stage` runs it again
    from its written parts (`ray.stage_retries` times): no row is lost or duplicated, and a model that always
    crashes fails the job. Not Ray Data's own restarts (unbounded by default): for a restartable actor whose
    constructor arguments sit in the object store (a tokenizer, a config) Ray 2.60's core worker logs an
    error-level line at every stage, and a restart cannot survive the loss of its node anyway.
    """
    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings():
        # Ray 2.60 deprecates bare remote args with no named parameter for actor restarts yet: kept, and the
        # warning it prints at every stage silenced, until Ray says how to turn restarts off.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=RayDeprecationWarning)
        return map_fn(stage_class, compute=actor_pool(size), max_restarts=0, max_task_retries=0, **kwargs)


def in_blocks(table, rows_per_block: int):
    """A Dataset of the pyarrow `table` cut into blocks of `rows_per_block` rows.

    `from_arrow(table)` makes ONE block, and an actor pool gives a block to one actor: the whole stage would
    run on a single actor (the pool never grows, the autoscaler never adds a node) and its rows would reach
    the run directory in one burst at the end instead of part by part.
    """
    import ray.data

    size = max(1, int(rows_per_block))
    return ray.data.from_arrow([table.slice(i, size) for i in range(0, max(table.num_rows, 1), size)])
