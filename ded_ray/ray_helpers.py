"""Ray Data scheduling helpers shared by engines and stages.

Engines and stages compute; these turn their config (pool sizes) into Ray Data's scheduling arguments, so
that neither package imports the other for them. Ray is imported when a helper is called, not here.
"""

from __future__ import annotations


def actor_pool(size: int | tuple[int, int]):
    """Ray Data's compute strategy for a stage class: `size` actors, or an autoscaling (min, max) pool.

    (Ray 2.51+ deprecates map_batches' `concurrency=` argument in favour of `compute=`.)
    """
    from ray.data import ActorPoolStrategy

    lo, hi = (size, size) if isinstance(size, int) else size
    return ActorPoolStrategy(min_size=int(lo), max_size=int(hi))


def in_blocks(table, rows_per_block: int):
    """A Dataset of the pyarrow `table` cut into blocks of `rows_per_block` rows.

    `from_arrow(table)` makes ONE block, and an actor pool gives a block to one actor: the whole stage would
    run on a single actor (the pool never grows, the autoscaler never adds a node) and its rows would reach
    the run directory in one burst at the end instead of part by part.
    """
    import ray.data

    size = max(1, int(rows_per_block))
    return ray.data.from_arrow([table.slice(i, size) for i in range(0, max(table.num_rows, 1), size)])
