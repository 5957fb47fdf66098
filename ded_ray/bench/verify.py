"""`ded bench verify`: what the safety of verification costs, measured side by side.

Math: verifications/s per core and p99 latency of `MathVerifierPool` (worker processes, hard timeouts) vs
math-verify called in-process on the main thread (the simplest correct alternative, which can hang). Items
are real MATH-500 gold answers wrapped as a model would write them when `../shared/data` (or
`$DED_SHARED_DATA`) is present, otherwise generated fractions/integers/intervals.

Code: test cases/s per core and the fixed cost per run of the sandbox vs `subprocess.run` of the same
program per test without any limits or isolation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ded_ray.verifiers.code import run_tests
from ded_ray.verifiers.math import MathVerifierPool

BENCH = "verify"


def _math_golds(n: int) -> tuple[list[str], str]:
    shared = Path(os.environ.get("DED_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    path = shared / "math500" / "math500.jsonl"
    if path.is_file():
        golds = [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
        return (golds * (n // len(golds) + 1))[:n], "MATH-500 gold answers"
    generated = []
    for i in range(n):
        generated.append([f"\\frac{{{i % 7 + 1}}}{{{i % 11 + 2}}}", str(i * 37), f"[{i}, {i + 3})",
                          f"{i % 9 + 1}\\sqrt{{{i % 5 + 2}}}"][i % 4])
    return generated, "generated answers"


def _wrap(gold: str) -> str:
    return f"... so the answer is $\\boxed{{{gold}}}$"


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def _bench_math(quick: bool) -> list[dict]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    n = 100 if quick else 500
    golds, source = _math_golds(n)
    items = [(_wrap(g), g) for g in golds]
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    # baseline: in-process, main thread, math-verify's own signal.alarm timeouts (cannot stop C code)
    for response, gold in items[:4]:  # warm sympy's caches, as the pool's workers do at start-up
        verify(parse(f"\\boxed{{{gold}}}", extraction_config=config), parse(response, extraction_config=config))
    latencies = []
    started = time.perf_counter()
    for response, gold in items:
        t = time.perf_counter()
        verify(parse(f"\\boxed{{{gold}}}", extraction_config=config), parse(response, extraction_config=config))
        latencies.append((time.perf_counter() - t) * 1000)
    base_s = time.perf_counter() - started
    base_rate, base_p99 = n / base_s, _p99(latencies)

    rows = [
        {"benchmark": BENCH, "case": "math in-process (main thread)", "metric": "verifications_per_s_per_core",
         "value": base_rate, "unit": "1/s", "note": f"{n} {source}"},
        {"benchmark": BENCH, "case": "math in-process (main thread)", "metric": "p99_latency", "value": base_p99,
         "unit": "ms"},
    ]
    with MathVerifierPool(workers=1, timeout_s=5.0) as pool:
        pool.verify_many(items[:4])  # start-up is paid once per actor, not per item
        started = time.perf_counter()
        verdicts = pool.verify_many(items)
        pool_s = time.perf_counter() - started
    rate = n / pool_s
    correct = sum(v.status == "correct" for v in verdicts)
    rows += [
        {"benchmark": BENCH, "case": "math worker pool (1 worker)", "metric": "verifications_per_s_per_core",
         "value": rate, "unit": "1/s", "baseline": "math in-process (main thread)", "ratio": rate / base_rate,
         "note": f"{correct}/{n} correct"},
        {"benchmark": BENCH, "case": "math worker pool (1 worker)", "metric": "p99_latency",
         "value": _p99([v.elapsed_ms for v in verdicts]), "unit": "ms",
         "baseline": "math in-process (main thread)", "ratio": _p99([v.elapsed_ms for v in verdicts]) / base_p99},
    ]
    return rows


_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"


def _bench_code(quick: bool) -> list[dict]:
    runs = 10 if quick else 40
    tests_per_run = 5
    tests = [{"type": "stdin", "input": f"{i} {i + 1}\n", "output": f"{2 * i + 1}\n"} for i in range(tests_per_run)]

    # baseline: one `subprocess.run` per test, no limits, no isolation
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "solution.py"
        program.write_text(_PROGRAM)
        started = time.perf_counter()
        for _ in range(runs):
            for test in tests:
                out = subprocess.run([sys.executable, str(program)], input=test["input"], capture_output=True,
                                     text=True, timeout=10)
                assert out.stdout.strip() == test["output"].strip()
        base_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(runs):
            subprocess.run([sys.executable, "-c", "pass"], capture_output=True, timeout=10)
        base_fixed_ms = (time.perf_counter() - started) * 1000 / runs

    started = time.perf_counter()
    verdicts = [run_tests(_PROGRAM, tests) for _ in range(runs)]
    sandbox_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(runs):
        run_tests("pass", [{"type": "stdin", "input": "", "output": ""}])
    fixed_ms = (time.perf_counter() - started) * 1000 / runs
    cases = runs * tests_per_run
    isolation = verdicts[0].detail.split("isolation: ")[-1]
    return [
        {"benchmark": BENCH, "case": "code subprocess.run per test (no limits)", "metric": "test_cases_per_s_per_core",
         "value": cases / base_s, "unit": "1/s"},
        {"benchmark": BENCH, "case": "code sandbox", "metric": "test_cases_per_s_per_core", "value": cases / sandbox_s,
         "unit": "1/s", "baseline": "code subprocess.run per test (no limits)", "ratio": base_s / sandbox_s,
         "note": f"{sum(v.status == 'correct' for v in verdicts)}/{runs} correct; {isolation}"},
        {"benchmark": BENCH, "case": "code subprocess.run per test (no limits)", "metric": "fixed_cost_per_run",
         "value": base_fixed_ms, "unit": "ms", "note": "python -c pass"},
        {"benchmark": BENCH, "case": "code sandbox", "metric": "fixed_cost_per_run", "value": fixed_ms, "unit": "ms",
         "baseline": "code subprocess.run per test (no limits)", "ratio": fixed_ms / base_fixed_ms,
         "note": "one run of an empty program with one test"},
    ]


def run(quick: bool = False) -> list[dict]:
    return _bench_math(quick) + _bench_code(quick)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
