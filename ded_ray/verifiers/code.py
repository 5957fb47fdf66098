"""Code verification: extract the program from a response, run it against its tests in the sandbox.

Test dicts (the `tests` column holds a JSON list of them):
- `{"type": "stdin", "input": str, "output": str}`: the program reads stdin and must print `output`
  (compared by LiveCodeBench's rules: stripped lines, equal as text or as Decimals, no float tolerance;
  see `sandbox_child.compare_stdout`).
- `{"type": "functional", "fn_name": str, "input": str | list, "output": str | value}`: call `fn_name`
  (a method of `class Solution` when the program defines one, LeetCode style, else a function). A string
  `input` is LiveCodeBench's format, one JSON value per line = one argument per line; `output` is JSON,
  compared as LiveCodeBench does (a tuple result as a list, then `==`).
- `{"type": "assert", "code": str, "entry_point": str | None}`: run `code` after the program (HumanEval
  `def check(candidate): ...`); when `entry_point` is given, call `check(<entry_point>)`, where
  `entry_point` is an expression such as `has_close_elements` or `Solution().minOperations`.

`convert_tests(raw, fmt, **row)` turns the benchmark formats (lcb, humaneval, leetcode) into these.

Limits: each test runs under a per-test time limit (wall and CPU) and all of a program's tests within a
per-problem wall budget; a problem's own `meta` (`time_limit_s` per test, `memory_limit_mb`, as the
Codeforces converter writes them) overrides the configured per-test time and memory (`limits_for`).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from ded_ray.verifiers.sandbox import SandboxLimits, run_sandboxed
from ded_ray.verifiers.verdict import (
    CORRECT,
    ERROR,
    TIMEOUT,
    UNPARSABLE,
    WRONG,
    Verdict,
)

TEST_TYPES = ("stdin", "functional", "assert")

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "python3", "py", "py3"}


def extract_program(response: str | None) -> str | None:
    """The last fenced Python block after `</think>` (else the last unlabelled fence, else the plain text).

    `None` when there is nothing that could be a program (empty text, or only thinking).
    """
    if not isinstance(response, str):
        return None
    head, sep, tail = response.rpartition("</think>")
    text = tail if sep else response
    if not sep and "<think>" in response:
        return None  # the model never finished thinking: there is no final answer to run
    blocks = _FENCE.findall(text)
    python = [body for tag, body in blocks if tag.lower() in _PYTHON_TAGS]
    untagged = [body for tag, body in blocks if not tag]
    for candidates in (python, untagged):
        if candidates and candidates[-1].strip():
            return candidates[-1].strip("\n")
    if blocks:  # fenced, but only in other languages
        return None
    return text.strip("\n") if text.strip() else None


def validate_tests(tests: Any) -> list[dict]:
    """Check the shape of a test list; raises ValueError naming the bad test and the expected keys."""
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"tests must be a non-empty list of test dicts, got {type(tests).__name__}")
    needed = {"stdin": ("input", "output"), "functional": ("fn_name", "input", "output"), "assert": ("code",)}
    for n, test in enumerate(tests):
        kind = test.get("type") if isinstance(test, dict) else None
        if kind not in needed:
            raise ValueError(f"test {n} has type {kind!r}; expected one of {TEST_TYPES}")
        absent = [key for key in needed[kind] if key not in test]
        if absent:
            raise ValueError(f"{kind} test {n} lacks {absent}; it needs {list(needed[kind])}")
    return tests


MIN_MEMORY_MB = 64  # a problem's memory limit is raised to this: the interpreter alone maps ~16 MB
MAX_OUTCOME_CHARS = 400  # the outcomes part of a detail stays short however many tests ran


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def parse_meta(meta: Any) -> dict:
    """A problem's `meta` (JSON text, a mapping, or missing/empty/NaN) as a dict; {} when it is none or
    not a JSON object (the config's limits then apply)."""
    if isinstance(meta, Mapping):
        return dict(meta)
    if isinstance(meta, str) and meta.strip():
        try:
            parsed = json.loads(meta)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def limits_for(meta: Any, base: SandboxLimits) -> SandboxLimits:
    """`base` with the problem's own limits from `meta`: `time_limit_s` (seconds per test, wall and CPU)
    and `memory_limit_mb` (address space per test, at least MIN_MEMORY_MB). Absent, non-numeric or
    non-positive values leave the configured limit. The per-problem budget (`timeout_s`) stays `base`'s,
    so a per-test limit above it is capped by it."""
    fields = parse_meta(meta)
    changes: dict[str, Any] = {}
    per_test = _positive(fields.get("time_limit_s"))
    if per_test is not None:
        changes.update(test_timeout_s=per_test, cpu_s=per_test)
    memory = _positive(fields.get("memory_limit_mb"))
    if memory is not None:
        changes["memory_mb"] = max(MIN_MEMORY_MB, math.ceil(memory))
    return dataclasses.replace(base, **changes) if changes else base


def run_tests(code: str, tests: list[dict], timeout_s: float = 10.0,
              limits: SandboxLimits | None = None, *, meta: Any = None, all_tests: bool = False) -> Verdict:
    """Verdict of a response (or a bare program) against its tests, run in the sandbox.

    `timeout_s` is wall-clock seconds for all tests together (used when `limits` is None; each test also
    has `SandboxLimits.test_timeout_s`, 6 s by default as in LiveCodeBench). `meta`: the problem's meta
    (JSON text or dict) whose `time_limit_s` / `memory_limit_mb` override the per-test limits. By default
    the run stops at the first test that does not pass; `all_tests=True` runs every test (the status is the
    same either way: the first failure decides it). `correct` = every test passed; `wrong` = a test failed
    (wrong output, exception, assertion, output or memory limit); `timeout` = out of time; `unparsable` = no
    program in the response; `error` = the tests are malformed or the sandbox itself failed. `detail` lists
    the tests' outcomes and the first failure (at most MAX_OUTCOME_CHARS), the limits and the isolation.
    """
    started = time.monotonic()
    program = extract_program(code)
    if program is None:
        return Verdict(UNPARSABLE, "no Python program found (no ```python block after </think>)", None,
                       (time.monotonic() - started) * 1000)
    try:
        validate_tests(tests)
    except ValueError as exc:
        return Verdict(ERROR, f"malformed tests: {exc}", program, (time.monotonic() - started) * 1000)
    limits = limits_for(meta, limits if limits is not None else SandboxLimits(timeout_s=timeout_s))
    report = run_sandboxed(program, tests, limits, all_tests=all_tests)
    return _verdict(report, program, len(tests), limits, (time.monotonic() - started) * 1000)


def _isolation(report: dict) -> str:
    have = ",".join(report.get("isolation", [])) or "none"
    lacking = report.get("isolation_missing", [])
    return f"isolation: {have}" + (f"; missing: {'; '.join(lacking)}" if lacking else "")


def _limits_note(limits: SandboxLimits) -> str:
    per_test = f"{limits.test_timeout_s:g} s/test, " if limits.test_timeout_s else ""
    return f"limits: {per_test}{limits.timeout_s:g} s/problem, {limits.memory_mb} MB"


def _outcomes(results: list[dict], max_groups: int = 8) -> str:
    """Per-test statuses in order, runs of 3+ collapsed ("passed x7, wrong, passed, passed"), at most
    `max_groups` runs."""
    groups: list[list] = []
    for result in results:
        if groups and groups[-1][0] == result["status"]:
            groups[-1][1] += 1
        else:
            groups.append([result["status"], 1])
    parts = [", ".join([status] * count) if count < 3 else f"{status} x{count}" for status, count in groups]
    if len(parts) > max_groups:
        parts = parts[:max_groups - 1] + [f"... {len(parts) - max_groups + 1} more groups"]
    return ", ".join(parts)


def _verdict(report: dict, program: str, total: int, limits: SandboxLimits, elapsed_ms: float) -> Verdict:
    if report.get("host_timeout"):
        return Verdict(TIMEOUT, f"killed after {report['limits']['timeout_s']:g} s wall clock (+ start-up "
                       "grace)", program, elapsed_ms)
    if "runner_error" in report:
        return Verdict(ERROR, f"sandbox failure: {report['runner_error']}", program, elapsed_ms)
    results = report["results"]
    passed = sum(r["status"] == "passed" for r in results)
    tail = f"; {_limits_note(limits)}; {_isolation(report)}"
    if passed == total:
        return Verdict(CORRECT, f"{total}/{total} tests run, all passed{tail}", program, elapsed_ms)
    first = next(r for r in results if r["status"] != "passed")
    index = results.index(first)
    status = {"timeout": TIMEOUT, "error": ERROR}.get(first["status"], WRONG)
    why = first["detail"] if len(first["detail"]) <= 200 else first["detail"][:200] + "..."
    head = (f"{len(results)}/{total} tests run: {_outcomes(results)} (test {index} {first['status']}: {why}); "
            f"{passed} passed")
    return Verdict(status, head[:MAX_OUTCOME_CHARS] + tail, program, elapsed_ms)


# --- benchmark formats -> our test dicts ---------------------------------------------------------------


def _as_list(raw: Any) -> Any:
    """Tests stored as JSON text, a Python repr, or already parsed."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return ast.literal_eval(raw)
    return raw


def _fn_name_from_starter(starter_code: str) -> str:
    names = re.findall(r"def\s+([A-Za-z_]\w*)\s*\(\s*self", starter_code or "")
    if not names:
        names = re.findall(r"def\s+([A-Za-z_]\w*)\s*\(", starter_code or "")
    if not names:
        raise ValueError(f"cannot find the function name in starter code {starter_code[:200]!r}; "
                         "functional LiveCodeBench tests need `def name(self, ...)` in starter_code")
    return names[-1]


def convert_tests(raw: Any, fmt: str, **row: Any) -> list[dict]:
    """Convert a benchmark's tests into our test dicts.

    - `lcb`: a list of {input, output, testtype}; functional tests need `starter_code=` (the function name
      is taken from `def name(self, ...)`).
    - `humaneval`: `raw` is the `test` code (`def check(candidate): ...`); needs `entry_point=`.
    - `leetcode`: the rllm dict `{"functional": "def check(candidate): ... check(Solution().name)"}`; the
      trailing call is replaced by an `entry_point` of `Solution().name`.
    - `native`: already our format (JSON text or list); validated.
    """
    if fmt == "native":
        return validate_tests(_as_list(raw))
    if fmt == "lcb":
        tests = []
        for test in _as_list(raw):
            kind = test.get("testtype", "stdin")
            if kind == "functional":
                tests.append({"type": "functional", "fn_name": _fn_name_from_starter(row.get("starter_code", "")),
                              "input": test["input"], "output": test["output"]})
            else:
                tests.append({"type": "stdin", "input": test["input"], "output": test["output"]})
        return validate_tests(tests)
    if fmt == "humaneval":
        entry_point = row.get("entry_point")
        if not entry_point:
            raise ValueError("humaneval tests need entry_point= (the function `check(candidate)` is called on)")
        return [{"type": "assert", "code": raw, "entry_point": entry_point}]
    if fmt == "leetcode":
        parsed = _as_list(raw)
        code = parsed["functional"] if isinstance(parsed, dict) else str(parsed)
        calls = re.findall(r"^check\((.+)\)\s*$", code, flags=re.MULTILINE)
        if not calls:
            raise ValueError(f"leetcode test code has no trailing `check(...)` call: {code[-200:]!r}")
        body = re.sub(r"^check\((.+)\)\s*$", "", code, flags=re.MULTILINE).rstrip() + "\n"
        return [{"type": "assert", "code": body, "entry_point": calls[-1].strip()}]
    raise ValueError(f"unknown tests format {fmt!r}; use one of lcb, humaneval, leetcode, native")
