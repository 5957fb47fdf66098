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
    write_tables(rows, out_dir, ran=names or list(BENCHMARKS))
    return rows


def write_tables(rows: list[dict], out_dir: Path, ran: list[str]) -> None:
    """bench.json + bench.md: this run's rows, and the rows of the benchmarks it did not run kept from the
    last tables (each benchmark says on which machine and day it was measured)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = out_dir / "bench.json"
    earlier = json.loads(previous.read_text()) if previous.exists() else {}
    # (tables written before `measured` existed name one machine for every row)
    measured = earlier.get("measured") or {r["benchmark"]: earlier.get("machine", "?") for r in earlier.get("rows", [])}
    measured = {name: info for name, info in measured.items() if name not in ran}
    kept = [r for r in earlier.get("rows", []) if r.get("benchmark") not in ran]
    when = f"{machine_description()}, {time.strftime('%Y-%m-%d')}"
    measured.update({name: when for name in ran})
    rows = kept + rows
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    rows.sort(key=lambda r: order.get(r.get("benchmark"), len(order)))
    previous.write_text(json.dumps({"measured": measured, "rows": rows}, indent=2, default=str))
    header = "\n".join(f"- {name}: {info}" for name, info in sorted(measured.items(), key=lambda kv: order.get(kv[0], 99)))
    (out_dir / "bench.md").write_text(f"Measured on (machine, day):\n{header}\n\n{markdown_table(rows)}\n")


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
