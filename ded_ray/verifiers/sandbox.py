"""Host side of the code sandbox: one confined runner process per program, the wall clock, clean-up.

`run_sandboxed(code, tests, limits)` has the pre-started runner (`sandbox_child.py`: see its docstring for
the confinement steps) fork a process for the program, in a fresh temporary directory with a scrubbed
environment, gives it `limits.timeout_s` for all
tests (each at most `limits.test_timeout_s`, enforced by the runner) plus a small start-up grace, kills its
whole process group on overrun, and always removes the directory. It returns the runner's report
(per-test results and the isolation it achieved) as a dict.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
# fork + namespace set-up (and the runner's own start, the first time), on top of the tests' own time budget
STARTUP_GRACE_S = 3.0


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
        "env": scrubbed_env(workdir),
    }
    started = time.monotonic()
    try:
        report = _parse_report(_SERVER.run(json.dumps(job).encode(),
                                           deadline=started + limits.timeout_s + STARTUP_GRACE_S))
    except OSError as exc:
        report = {"runner_error": f"the sandbox runner could not be reached: {exc}"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["wall_ms"] = (time.monotonic() - started) * 1000
    report["limits"] = asdict(limits)
    return report


def _parse_report(raw: bytes | None) -> dict:
    if raw is None:
        return {"host_timeout": True}
    lines = [line for line in raw.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return {"runner_error": "the runner exited without a report"}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"runner_error": f"unreadable runner output {lines[-1][:200]!r}"}


class _RunnerServer:
    """The pre-started runner (`sandbox_child.serve`), one per host process, started on first use.

    Starting a Python interpreter for every program cost more than the program's own run (issue 20: the
    fixed cost was 2x a plain `subprocess.run`). The server forks a fresh process per job instead, which
    confines itself exactly as a freshly started runner did. Jobs travel through pipes passed over a Unix
    socket, never through the server, so nothing of one job is in the memory a later job is forked from.
    A server that died (or a host process forked from the one that started it) gets a new server.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen | None = None
        self._owner = -1

    def run(self, job: bytes, deadline: float) -> bytes | None:
        """The job's report bytes, or None when `deadline` (monotonic) passed first (its processes killed)."""
        job_read, job_write = os.pipe()
        report_read, report_write = os.pipe()
        try:
            try:
                pid = self._start_job(job_read, report_write)
            finally:  # the job has its own copies now (or there is no job)
                os.close(job_read)
                os.close(report_write)
            try:
                _write_all(job_write, job)  # the job reads all of it before it does anything else
            except BrokenPipeError:
                pass  # the job died before reading: its report (or EOF) says why
            finally:
                os.close(job_write)
                job_write = -1
            report = _read_until(report_read, deadline)
            if report is None:
                _kill_group(pid)
            return report
        finally:
            os.close(report_read)
            if job_write != -1:
                os.close(job_write)

    def _start_job(self, job_read: int, report_write: int) -> int:
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None or self._owner != os.getpid() or self._process.poll() is not None:
                    self._start()
                try:
                    socket.send_fds(self._sock, [b"job"], [job_read, report_write])
                    return int(_read_line(self._sock))
                except (OSError, ValueError):
                    self._stop()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-I", str(CHILD), str(theirs.fileno())], pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=scrubbed_env(tempfile.gettempdir()), cwd="/", start_new_session=True,
            )
        self._sock, self._owner = ours, os.getpid()

    def _stop(self) -> None:
        if self._sock is not None and self._owner == os.getpid():
            self._sock.close()
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
        self._sock = self._process = None


_SERVER = _RunnerServer()


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("the sandbox runner closed its socket")
        data += chunk
    return data.decode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything written to `fd` until its last writer closes it, or None if `deadline` comes first."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _kill_group(pid: int) -> None:
    """SIGKILL the job's process group (the PID-namespace init is in it: its death ends the rest)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
