"""`ded bench verify`: what the safety of verification costs, measured side by side.

Math: verifications/s per core and p99 latency of `MathVerifierPool` (worker processes, hard timeouts) vs
math-verify called in-process on the main thread (the simplest correct alternative, which can hang). Items
are real MATH-500 gold answers wrapped as a model would write them when `../shared/data` (or
`$DED_SHARED_DATA`) is present, otherwise generated fractions/integers/intervals.

Code: test cases/s per core and the fixed cost per run of the sandbox vs `subprocess.run` of the same
program per test without any limits or isolation. On real data (when `../shared/data` is present, else
skipped with a message): the LeetCode (rllm) reference solutions and the HumanEval canonical solutions
through `run_tests`, against `subprocess.run` of the same program + prelude + `check(...)` as one script
with no sandbox, the two interleaved problem by problem so load hits both alike; a test case is one
`assert` statement of the problem's `check()` (counted in the source), the latency is per problem.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ded_ray.log import log
from ded_ray.verifiers.code import convert_tests, run_tests
from ded_ray.verifiers.math import MathVerifierPool
from ded_ray.verifiers.sandbox_child import PRELUDE

BENCH = "verify"


def _shared_data() -> Path:
    return Path(os.environ.get("DED_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _math_golds(n: int) -> tuple[list[str], str]:
    path = _shared_data() / "math500" / "math500.jsonl"
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

    from ded_ray.verifiers._math_worker import WARM_UP, WARM_UP_PAIRS

    n = 100 if quick else 500
    golds, source = _math_golds(n)
    items = [(_wrap(g), g) for g in golds]
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    # baseline: in-process, main thread, math-verify's own signal.alarm timeouts (cannot stop C code),
    # warmed on the same generic answer shapes as the pool's workers at start-up (none of the items)
    for gold, answer in [(w, w) for w in WARM_UP] + WARM_UP_PAIRS:
        verify(parse(f"\\boxed{{{gold}}}", extraction_config=config), parse(_wrap(answer), extraction_config=config))
    latencies = []
    started = time.perf_counter()
    for response, gold in items:
        t = time.perf_counter()
        verify(parse(f"\\boxed{{{gold}}}", extraction_config=config), parse(response, extraction_config=config))
        latencies.append((time.perf_counter() - t) * 1000)
    base_s = time.perf_counter() - started
    base_rate, base_p99 = n / base_s, _p99(latencies)

    base = "math in-process (main thread)"
    rows = [
        {"benchmark": BENCH, "case": base, "metric": "verifications_per_s_per_core",
         "value": base_rate, "unit": "1/s", "note": f"{n} {source}"},
        {"benchmark": BENCH, "case": base, "metric": "p99_latency", "value": base_p99,
         "unit": "ms", "note": f"median {sorted(latencies)[len(latencies) // 2]:.2f} ms"},
    ]
    pools = (("math worker pool (1 worker)", None), ("math worker pool (1 worker, 1 item per round trip)", 1))
    for case, chunk in pools:
        kwargs = {} if chunk is None else {"chunk_size": chunk}
        with MathVerifierPool(workers=1, timeout_s=5.0, **kwargs) as pool:
            pool.verify_many([(_wrap("1"), "1")])  # start-up is paid once per actor, not per item
            started = time.perf_counter()
            verdicts = pool.verify_many(items)
            pool_s = time.perf_counter() - started
        rate = n / pool_s
        correct = sum(v.status == "correct" for v in verdicts)
        elapsed = [v.elapsed_ms for v in verdicts]
        p99 = _p99(elapsed)
        rows += [
            {"benchmark": BENCH, "case": case, "metric": "verifications_per_s_per_core",
             "value": rate, "unit": "1/s", "baseline": base, "ratio": rate / base_rate,
             "note": f"{correct}/{n} correct; chunk {pool.chunk_size}"},
            {"benchmark": BENCH, "case": case, "metric": "p99_latency", "value": p99, "unit": "ms",
             "baseline": base, "ratio": p99 / base_p99, "note": f"median {sorted(elapsed)[n // 2]:.2f} ms"},
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


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _real_code_jobs(name: str) -> tuple[str, list[tuple[str, dict]]] | None:
    """(label, [(program, assert test)]) of a real set, or None (with a message) when its file is absent."""
    shared = _shared_data()
    if name == "leetcode":
        path = shared / "leetcode_rllm" / "leetcode_test_200.jsonl"
        if path.is_file():
            return "LeetCode reference", [(r["reference_solution"], convert_tests(r["tests"], "leetcode")[0])
                                          for r in _jsonl(path)]
    else:
        path = shared / "humaneval" / "humaneval.jsonl"
        if path.is_file():
            return "HumanEval canonical", [
                (r["prompt"] + r["canonical_solution"],
                 convert_tests(r["test"], "humaneval", entry_point=r["entry_point"])[0]) for r in _jsonl(path)]
    log(f"[bench verify] skipping the {name} rows: {path} not found (set DED_SHARED_DATA to the shared data)")
    return None


def _asserts(test_code: str) -> int:
    return sum(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(test_code))) or 1


def _plain_run(program: str, test: dict, script: Path) -> bool:
    """The same program and test as one script under plain `subprocess.run`: no limits, no isolation."""
    script.write_text(f"{PRELUDE}\n{program}\n\n{test['code']}\ncheck({test['entry_point']})\n")
    return subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, check=False,
                          cwd=script.parent).returncode == 0


def _bench_code_real(quick: bool) -> list[dict]:
    rows: list[dict] = []
    for name in ("leetcode", "humaneval"):
        found = _real_code_jobs(name)
        if found is None:
            continue
        label, jobs = found
        jobs = jobs[::5] if quick else jobs
        cases = sum(_asserts(test["code"]) for _, test in jobs)
        base_ms, sandbox_ms, base_ok, verdicts = [], [], 0, []
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "solution.py"
            for program, test in jobs:  # interleaved: both see the same load
                started = time.perf_counter()
                base_ok += _plain_run(program, test, script)
                base_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                verdicts.append(run_tests(program, [test]))
                sandbox_ms.append((time.perf_counter() - started) * 1000)
        base_rate, rate = cases / (sum(base_ms) / 1000), cases / (sum(sandbox_ms) / 1000)
        plain = f"code {label}, subprocess.run (no sandbox)"
        sandbox = f"code {label}, sandbox run_tests"
        correct = sum(v.status == "correct" for v in verdicts)
        failed = sorted({v.status for v in verdicts if v.status != "correct"})
        rows += [
            {"benchmark": BENCH, "case": plain, "metric": "test_cases_per_s_per_core", "value": base_rate,
             "unit": "1/s", "note": f"{len(jobs)} problems, {cases} asserts; {base_ok}/{len(jobs)} exit 0"},
            {"benchmark": BENCH, "case": plain, "metric": "p99_latency_per_problem", "value": _p99(base_ms),
             "unit": "ms", "note": f"median {sorted(base_ms)[len(base_ms) // 2]:.0f} ms"},
            {"benchmark": BENCH, "case": sandbox, "metric": "test_cases_per_s_per_core", "value": rate,
             "unit": "1/s", "baseline": plain, "ratio": rate / base_rate,
             "note": f"{correct}/{len(jobs)} correct" + (f" (others: {', '.join(failed)})" if failed else "")},
            {"benchmark": BENCH, "case": sandbox, "metric": "p99_latency_per_problem", "value": _p99(sandbox_ms),
             "unit": "ms", "baseline": plain, "ratio": _p99(sandbox_ms) / _p99(base_ms),
             "note": f"median {sorted(sandbox_ms)[len(sandbox_ms) // 2]:.0f} ms"},
        ]
    return rows


def run(quick: bool = False) -> list[dict]:
    return _bench_math(quick) + _bench_code(quick) + _bench_code_real(quick)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
