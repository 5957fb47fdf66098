"""Host side of the code sandbox: start one confined runner per program, enforce the wall clock, clean up.

`run_sandboxed(code, tests, limits)` starts `sandbox_child.py` (see its docstring for the confinement
steps) in a fresh temporary directory with a scrubbed environment, gives it `limits.timeout_s` for all
tests (each at most `limits.test_timeout_s`, enforced by the runner) plus a small start-up grace, kills its
whole process group on overrun, and always removes the directory. It returns the runner's report
(per-test results and the isolation it achieved) as a dict.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
STARTUP_GRACE_S = 3.0  # interpreter start + namespace set-up, on top of the tests' own time budget


# LiveCodeBench's per-test limit (`--timeout`, default 6 s in lcb_runner/runner/parser.py, a signal.alarm
# around each test's call): a program LCB accepts is not timed out here by a tighter default.
DEFAULT_TEST_TIMEOUT_S = 6.0


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock for all tests of one program
    test_timeout_s: float | None = DEFAULT_TEST_TIMEOUT_S  # wall clock per test; None = only timeout_s
    cpu_s: float | None = None  # CPU seconds per test process; None = the per-test wall limit
    memory_mb: int = 2048  # address space per test process
    fsize_mb: int = 64  # largest file (and stdout) a test may write
    tmpfs_mb: int = 128  # size of the private work directory (when a mount namespace is available)
    nproc: int = 64  # processes + threads the sandbox may have at once


# Only these variables reach the program: no tokens, no cloud credentials, no Ray address.
_KEPT_ENV = ("LANG", "LC_ALL", "TZ")
_FIXED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def scrubbed_env(workdir: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in _KEPT_ENV if key in os.environ}
    env.update(_FIXED_ENV)
    env.update({"HOME": workdir, "TMPDIR": workdir, "USER": "sandbox", "LOGNAME": "sandbox"})
    return env


def _hidden_dirs(exposed: list[str]) -> list[str]:
    """Directories covered by an empty tmpfs in the sandbox (the `exposed` paths inside them are bound back).

    The homes, and, when the sandbox drops to a uid of its own (started as root), any directory above an
    exposed path that other users may not enter: a venv inside a `mktemp -d` folder (0700) would otherwise
    be unreadable to that uid, and its packages (e.g. sortedcontainers) would fail to import.
    """
    dirs = {os.path.expanduser("~")}
    if os.geteuid() == 0:
        dirs.add("/root")
        dirs.update(_closed_ancestors(exposed))
    dirs = {d for d in dirs if d not in ("/", "") and os.path.isdir(d)}
    return sorted(d for d in dirs if not any(d.startswith(outer.rstrip("/") + "/") for outer in dirs))


def _closed_ancestors(paths: list[str]) -> set[str]:
    """For each path, the topmost directory above it that others may not enter (no o+x), if any."""
    closed = set()
    for path in paths:
        for parent in reversed(Path(path).parents):  # from / down
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                closed.add(str(parent))
                break
    return closed


def _exposed_dirs() -> list[str]:
    """Directories the interpreter needs even when they sit inside a hidden directory (e.g. ~/.pyenv)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    return sorted(os.path.realpath(p) for p in paths)


def run_sandboxed(code: str, tests: list[dict], limits: SandboxLimits = SandboxLimits(),
                  all_tests: bool = False) -> dict:
    """Run `code` against `tests` in the sandbox; the runner's report plus `wall_ms` and `host_timeout`.

    The runner stops at the first test that does not pass unless `all_tests`.

    Never raises for anything the program does. On a wall-clock overrun the report is
    `{"host_timeout": True, ...}`; if the runner itself fails, `{"runner_error": "..."}`.
    """
    workdir = tempfile.mkdtemp(prefix="ded-sandbox-")
    exposed = _exposed_dirs()
    job = {
        "code": code,
        "tests": tests,
        "workdir": workdir,
        "timeout_s": limits.timeout_s,
        "test_timeout_s": limits.test_timeout_s,
        "cpu_s": limits.cpu_s or min(limits.test_timeout_s or limits.timeout_s, limits.timeout_s),
        "all_tests": all_tests,
        "memory_mb": limits.memory_mb,
        "fsize_mb": limits.fsize_mb,
        "tmpfs_mb": limits.tmpfs_mb,
        "nproc": limits.nproc,
        "hide": _hidden_dirs(exposed),
        "expose": exposed,
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-I", str(CHILD)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=scrubbed_env(workdir), cwd=workdir, start_new_session=True,
    )
    try:
        out, err = process.communicate(json.dumps(job).encode(), timeout=limits.timeout_s + STARTUP_GRACE_S)
        report: dict = {}
        lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
        if lines:
            try:
                report = json.loads(lines[-1])
            except ValueError:
                report = {"runner_error": f"unreadable runner output {lines[-1][:200]!r}"}
        else:
            report = {"runner_error": f"runner exited with code {process.returncode} and no report; "
                                      f"stderr: {err.decode(errors='replace')[-500:]}"}
    except subprocess.TimeoutExpired:
        report = {"host_timeout": True}
    finally:
        _kill_group(process)
        shutil.rmtree(workdir, ignore_errors=True)
    report["wall_ms"] = (time.monotonic() - started) * 1000
    report["limits"] = asdict(limits)
    return report


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the runner's process group (the PID-namespace init is in it: its death ends the rest)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        process.kill()
