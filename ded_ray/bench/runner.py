"""`ded bench runner`: the driver's peak memory while a row-wise stage processes N long rows.

A row-wise stage (the repetition filter) over N synthetic trajectories of 16,000 characters each, made by
Ray Data's workers, written into a run directory — by the streaming runner (`rundir.run_stage`: workers
write the parts, the driver sees one summary per part) and by the runner it replaced (every batch through
the driver, parts written there, then the whole stage read back as one table for the next step), side by
side at each N. Each case runs in a fresh process, so its peak RSS (`ru_maxrss`) is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time

BENCH = "runner"
ROW_CHARS = 16_000
PART_ROWS = 256
RUNNERS = ("streaming run_stage", "rows through the driver (before)")


def run(quick: bool = False) -> list[dict]:
    sizes = (500, 1000, 2000) if quick else (5000, 10000, 20000)
    rows = []
    for n in sizes:
        measured = {runner: _child(runner, n) for runner in RUNNERS}
        for runner, m in measured.items():
            baseline = RUNNERS[1] if runner == RUNNERS[0] else None
            ratio = m["peak_mb"] / measured[baseline]["peak_mb"] if baseline else None
            rows.append({"benchmark": BENCH, "case": f"{runner}, {n} rows", "metric": "driver_peak_rss",
                         "value": m["peak_mb"], "unit": "MB", "baseline": f"{baseline}, {n} rows" if baseline else None,
                         "ratio": ratio, "note": f"{n} x {ROW_CHARS} chars ({n * ROW_CHARS / 1e6:.0f} MB of text); "
                                                 f"{m['rejected']} rejected; {m['seconds']:.0f}s; RSS after ray.init "
                                                 f"{m['start_mb']:.0f} MB"})
    return rows


def _child(runner: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "ded_ray.bench.runner", runner, str(n)], capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"bench runner child failed ({runner}, {n} rows):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rows(batch, row_chars: int):
    """Synthetic trajectories: numbered sentences (no loop), every 10th a loop of one sentence."""
    import pandas as pd

    from ded_ray import schema as S

    ids = batch["id"].tolist()
    texts = []
    for i in ids:
        if i % 10 == 0:
            text = f"I check row {i} again. " * (row_chars // 20)
        else:
            text = " ".join(f"step {k} of row {i} adds {k * i % 97}." for k in range(row_chars // 24))
        texts.append(text[:row_chars])
    return pd.DataFrame({S.ROLLOUT_ID: [f"row-{i}" for i in ids], S.RESPONSE: texts})


def _measure(runner: str, n: int) -> dict:
    import ray
    import ray.data

    from ded_ray import plan
    from ded_ray.rundir import RunDir, run_stage
    from ded_ray.stages.repetition import RepetitionStage

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = _rss_mb()
    stage = plan.QUALITY_FILTERS[0]
    with tempfile.TemporaryDirectory() as root:
        run = RunDir(root, "bench")
        ds = (ray.data.range(n, override_num_blocks=max(4, n // PART_ROWS))
              .map_batches(_rows, fn_kwargs={"row_chars": ROW_CHARS}, batch_format="pandas")
              .map_batches(RepetitionStage, fn_constructor_kwargs={"ngram": 50, "max_share": 0.17, "min_words": 200},
                           batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=1)))
        started = time.monotonic()
        if runner == RUNNERS[0]:
            rejected = sum(run_stage(run, stage, lambda _done: ds, part_rows=PART_ROWS).rejected.values())
        else:
            rejected = _through_the_driver(run, stage, ds)
        seconds = time.monotonic() - started
    return {"peak_mb": _rss_mb(), "start_mb": start, "seconds": seconds, "rejected": rejected}


def _through_the_driver(run, stage, ds) -> int:
    """What `run_stage` did before it streamed: batches iterated in the driver and written there, then the
    whole stage read back as one table (which the next step turned into a Dataset again)."""
    folder = run.stage(stage)
    for batch in ds.iter_batches(batch_size=PART_ROWS, batch_format="pyarrow"):
        folder.write_part(batch)
    table = folder.read()
    return sum(run.write_rejected(stage.name, table).values())


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], int(sys.argv[2]))))
