"""`ded bench [NAME ...]`: run stage benchmarks and write one table (markdown + json).

Each benchmark module measures its cases side by side in one process, so the ratios hold on a shared,
noisy machine even when the absolute figures move.
"""

from __future__ import annotations

import importlib
import json
import platform
import time
from pathlib import Path

from ded_ray.bench import BENCHMARKS
from ded_ray.errors import UserError
from ded_ray.log import log

COLUMNS = ("benchmark", "case", "metric", "value", "unit", "baseline", "ratio", "note")


def run_benchmarks(names: list[str], quick: bool, out_dir: Path) -> list[dict]:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise UserError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    rows: list[dict] = []
    for name in names or list(BENCHMARKS):
        log(f"[bench {name}] running{' (quick)' if quick else ''}")
        started = time.monotonic()
        module = importlib.import_module(f"ded_ray.bench.{name}")
        rows.extend(module.run(quick=quick))
        log(f"[bench {name}] done in {time.monotonic() - started:.0f}s")
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    (out_dir / "bench.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2, default=str))
    (out_dir / "bench.md").write_text(f"Machine: {machine}\n\n{markdown_table(rows)}\n")
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def machine_description() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")
