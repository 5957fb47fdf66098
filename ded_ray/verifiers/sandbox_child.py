"""The sandbox runner: a process `sandbox.py` starts once, which forks one process per untrusted program
(stdlib only, run by path; `serve`).

Each forked job reads its job (JSON from a pipe: code, tests, limits, workdir, environment), confines
itself, then runs each test in a forked child and writes one JSON report line to the report pipe. A test's own fields are checked and parsed before
the program runs (`prepare_test`), and only the program's execution is caught as its failure (`wrong`); a
malformed test or a failure of the harness's own code (the comparison) is reported as `error`.

Confinement, in order (each step is recorded in `isolation`; a step the platform refuses is skipped and
named in `isolation_missing`):

1. mount namespace (private propagation, so nothing leaks to the host): the whole file tree is remounted
   read-only, a fresh size-limited tmpfs is mounted on the work directory, and the invoking user's home
   (e.g. /root with ~/.ray, tokens) is covered by an empty tmpfs; only the Python installation inside it,
   if any, is bound back (read-only) so the interpreter keeps working.
2. network + PID namespaces: no interface but a down loopback, so every connect fails; the runner's first
   child is PID 1 of the namespace, and when it exits the kernel kills every process left inside.
3. an unprivileged identity: started as root, the runner switches to a uid of its own (1,000,000 + its
   pid, unique among live runs), so RLIMIT_NPROC applies (root ignores it) and caps the fork bomb without
   touching other runs, and no root-owned file is writable; started as a normal user, it enters a user
   namespace instead and caps NPROC at its current process count plus the limit.
4. per test child: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, no core files, its own process
   group, stdin from a file, stdout/stderr to files, every other descriptor closed, no_new_privs; killed at
   its wall-clock deadline (`test_timeout_s`, or what is left of the problem's `timeout_s` if sooner).

The host side adds: a scrubbed environment (HOME and TMPDIR = the work directory) and a wall-clock limit
that kills the whole process group.

`compare_stdout` / `compare_values` follow LiveCodeBench's grader exactly (see the comment above them).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import math
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from decimal import Decimal, InvalidOperation

# --- output comparison (LiveCodeBench's rules) ---------------------------------------------------------
#
# Mirrors lcb_runner/evaluation/testing_util.py (LiveCodeBench/LiveCodeBench @ 15808c7), so a verdict here
# is the verdict LiveCodeBench's own grader gives:
# - stdout (`grade_stdio` + `get_stripped_lines` + `convert_line_to_decimals`): both texts are `strip()`ped,
#   split on "\n" only (a "\r\n" line keeps its "\r" until the line's own strip removes it; a lone "\r"
#   does not split), and each line stripped; the line counts must match (blank lines inside count). A line
#   passes when equal as text, else when both lines parse token by token (`split()`) as `Decimal` and the
#   lists are equal: `1.0` == `1` and `1e3` == `1000`, but there is NO float tolerance
#   (`0.30000000000000004` != `0.3`), and a line with any non-number token must match exactly (`a  b` !=
#   `a b`). A signalling NaN (`sNaN`) raises in the comparison, as it does in theirs (their harness then
#   reports "Error during testing"); ours reports `error`.
# - return values (`grade_call_based`): a returned tuple becomes a list (top level only: `[(1, 2)]` !=
#   `[[1, 2]]`), then plain `==` with the JSON-decoded expected value: `1 == 1.0`, `True == 1`, no float
#   tolerance.
# Where ours differs (not comparison rules): a blank line in a functional test's input is skipped (theirs
# fails to parse it); a stdin program's non-zero `sys.exit` is `wrong` (theirs swallows every SystemExit);
# a result whose comparison raises is `wrong` when the program's own type raised it (theirs: runtime error).


def _stripped_lines(text: str) -> list[str]:
    """LCB `get_stripped_lines`."""
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    """LCB `convert_line_to_decimals`: the line's tokens as Decimals, or None when one is not a number."""
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def compare_stdout(got: str, want: str) -> tuple[bool, str]:
    """(passed, why not) by LiveCodeBench's stdout rules (see above); `why` is short and bounded."""
    got_lines, want_lines = _stripped_lines(got), _stripped_lines(want)
    if len(got_lines) != len(want_lines):
        return False, f"expected {len(want_lines)} lines, got {len(got_lines)}"
    for n, (g, w) in enumerate(zip(got_lines, want_lines)):
        if g == w:
            continue
        got_numbers, want_numbers = _decimals(g), _decimals(w)
        if got_numbers is None or want_numbers is None or got_numbers != want_numbers:
            return False, f"line {n + 1}: expected {w[:80]!r}, got {g[:80]!r}"
    return True, ""


def compare_values(got, want) -> bool:
    """LiveCodeBench's call-based rule: a tuple result as a list, then `==` (no tolerance, see above)."""
    if isinstance(got, tuple):
        got = list(got)
    return bool(got == want)


# --- confinement ---------------------------------------------------------------------------------------

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}.get(os.uname().machine)
MOUNT_ATTR_RDONLY, AT_FDCWD, AT_RECURSIVE = 1, -100, 0x8000
UID_BASE = 1_000_000  # sandbox uids: UID_BASE + runner pid; far above any real account

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def _mount(source, target: str, fstype, flags: int, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _readonly_tree(path: str) -> None:
    if SYS_MOUNT_SETATTR is None:
        raise OSError("mount_setattr number unknown on this architecture")
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr)), f"mount_setattr(ro) {path}")


def _hide_dir(hidden: str, expose: list[str], stage: str) -> None:
    """Cover `hidden` with an empty read-only tmpfs; bind the paths in `expose` (inside it) back."""
    keep = [p for p in expose if p.startswith(hidden.rstrip("/") + "/") and os.path.isdir(p)]
    staged = []
    for n, path in enumerate(keep):  # park each kept tree before the cover hides it
        spot = os.path.join(stage, f"keep{n}")
        os.mkdir(spot)
        _mount(path, spot, None, MS_BIND | MS_REC)
        staged.append((spot, path))
    _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for spot, path in staged:
        os.makedirs(path, exist_ok=True)
        _mount(spot, path, None, MS_BIND | MS_REC)
        _check(_libc.umount2(spot.encode(), MNT_DETACH), f"umount {spot}")
        os.rmdir(spot)
    _mount(None, hidden, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _write_id_maps(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _count_own_processes(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                continue
    return count


def confine(job: dict) -> tuple[list[str], list[str], int | None]:
    """Apply namespaces, mounts and identity; returns (isolation steps, missing steps, sandbox uid)."""
    done: list[str] = []
    missing: list[str] = []
    workdir = job["workdir"]
    as_root = os.geteuid() == 0
    sandbox_uid = UID_BASE + os.getpid() if as_root else None
    outer_uid, outer_gid = os.getuid(), os.getgid()
    in_userns = False

    if not sys.platform.startswith("linux"):
        return done, ["namespaces (not Linux)", "unprivileged uid"], None
    try:
        if as_root:
            _unshare(CLONE_NEWNS)
        else:
            _unshare(CLONE_NEWUSER | CLONE_NEWNS)
            _write_id_maps(outer_uid, outer_gid)
            in_userns = True
            done.append("userns")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        done.append("mntns")
    except OSError as exc:
        missing.append(f"mntns ({exc.strerror})")
    if "mntns" in done:
        try:
            _readonly_tree("/")
            done.append("ro-root")
        except OSError as exc:
            missing.append(f"ro-root ({exc.strerror})")
        try:
            owner = f",uid={sandbox_uid},gid={sandbox_uid}" if as_root else ""
            _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
                   f"size={int(job['tmpfs_mb'])}m,mode=0700{owner}")
            done.append(f"tmpfs-workdir({int(job['tmpfs_mb'])}m)")
        except OSError as exc:
            missing.append(f"tmpfs-workdir ({exc.strerror})")
        for hidden in job.get("hide", []):
            if os.path.isdir(hidden) and not workdir.startswith(hidden.rstrip("/") + "/"):
                try:
                    os.makedirs(os.path.join(workdir, ".stage"), exist_ok=True)
                    _hide_dir(hidden, job.get("expose", []), os.path.join(workdir, ".stage"))
                    done.append(f"hidden:{hidden}")
                except OSError as exc:
                    missing.append(f"hide {hidden} ({exc.strerror})")
    if as_root and "tmpfs-workdir" not in " ".join(done):
        os.chown(workdir, sandbox_uid, sandbox_uid)  # the host-made directory becomes the sandbox's
    try:
        _unshare(CLONE_NEWNET | CLONE_NEWPID if (as_root or in_userns) else
                 CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID)
        done += ["netns", "pidns"]
    except OSError as exc:
        missing.append(f"netns+pidns ({exc.strerror})")
    nproc = int(job["nproc"])
    if as_root:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        os.setgroups([])
        os.setgid(sandbox_uid)
        os.setuid(sandbox_uid)
        done.append(f"uid={sandbox_uid}")
    else:
        # RLIMIT_NPROC counts all of this user's processes: allow what already runs plus the budget.
        allowed = _count_own_processes(outer_uid) + nproc
        resource.setrlimit(resource.RLIMIT_NPROC, (allowed, allowed))
        missing.append("unprivileged uid (not started as root: runs as the invoking user)")
    done.append(f"nproc={nproc}")
    try:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
        done.append("no_new_privs")
    except OSError as exc:
        missing.append(f"no_new_privs ({exc.strerror})")
    return done, missing, sandbox_uid


# --- the test child's limits and prelude ---------------------------------------------------------------

PRELUDE = (  # what LeetCode's Python 3 environment imports for a solution; pow stays the builtin
    "from typing import *\nfrom collections import *\nfrom heapq import *\nfrom bisect import *\n"
    "from itertools import *\nfrom functools import *\nfrom math import *\nfrom string import *\n"
    "import math, heapq, bisect, itertools, functools, collections, string, re, sys, json, random\n"
    "import builtins as _b\npow = _b.pow\ndel _b\n"
)


def _limit_child(job: dict) -> None:
    cpu = int(math.ceil(job["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(job["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    fsize = int(job["fsize_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _short(value, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a returned object's own __repr__ may raise
        text = f"<{type(value).__name__}; repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


# --- preparing a test (harness side: runs before any of the program's code) ----------------------------


class MalformedTest(ValueError):
    """A test whose own fields are unusable: no program could pass it: `error`, never `wrong`."""


def _field(test: dict, key: str, *types: type):
    if key not in test:
        raise MalformedTest(f"{test['type']} test lacks {key!r}")
    if not isinstance(test[key], types):
        raise MalformedTest(f"{key!r} is {type(test[key]).__name__}, expected "
                            f"{' or '.join(t.__name__ for t in types)}")
    return test[key]


def _json(text: str, what: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: not JSON, or an int past Python's digit limit
        raise MalformedTest(f"{what} is not JSON ({exc}): {text[:80]!r}") from None


def _compile(source: str, filename: str, mode: str):
    try:
        return compile(source, filename, mode)
    except (SyntaxError, ValueError) as exc:  # ValueError: a null byte
        raise MalformedTest(f"{filename} does not compile: {exc}") from None


def prepare_test(test) -> dict:
    """Check and parse one test's harness fields; raises MalformedTest. Done before the program runs, so
    that a broken test can never be blamed on the program.

    Returns {"type": "stdin", "input", "output"}, {"type": "functional", "fn_name", "args", "want"} or
    {"type": "assert", "code": <code object>, "entry": <code object> | None}.
    """
    if not isinstance(test, dict):
        raise MalformedTest(f"a test is a dict, got {type(test).__name__}")
    kind = test.get("type")
    if kind == "stdin":
        return {"type": kind, "input": _field(test, "input", str), "output": _field(test, "output", str)}
    if kind == "functional":
        name = _field(test, "fn_name", str)
        if not name.isidentifier():
            raise MalformedTest(f"fn_name {name!r} is not a Python identifier")
        raw_args, raw_want = _field(test, "input", object), _field(test, "output", object)
        if isinstance(raw_args, str):  # LiveCodeBench: one JSON value per line, one argument each
            args = [_json(line, f"input line {n + 1}") for n, line in enumerate(raw_args.split("\n"))
                    if line.strip()]
        else:
            args = list(raw_args) if isinstance(raw_args, (list, tuple)) else [raw_args]
        want = _json(raw_want, "output") if isinstance(raw_want, str) else raw_want
        return {"type": kind, "fn_name": name, "args": args, "want": want}
    if kind == "assert":
        entry = test.get("entry_point")
        if not isinstance(entry, (str, type(None))):
            raise MalformedTest(f"'entry_point' is {type(entry).__name__}, expected str or None")
        return {"type": kind, "code": _compile(_field(test, "code", str), "tests.py", "exec"),
                "entry": _compile(entry, "entry_point", "eval") if entry else None}
    raise MalformedTest(f"unknown test type {kind!r}; expected stdin, functional or assert")


# --- running one test in a child -----------------------------------------------------------------------


def _harness_error(what: str, exc: BaseException) -> dict:
    """A record for a failure of our own code (not the program's): the parent turns it into `error`."""
    return {"ok": False, "error": True,
            "why": f"harness failure: {what}: {type(exc).__name__}: {str(exc)[:200]}"}


_PLAIN_TYPES = (type(None), bool, int, float, str)


def _is_plain(value) -> bool:
    """Made only of the builtin types JSON gives (plus tuples)? Then comparing it runs none of the program's
    code, and a comparison failure is our bug. Iterative, with a seen-set: it may be deep or cyclic."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if type(item) in (list, tuple, dict):
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend([*item.keys(), *item.values()] if type(item) is dict else item)
        elif type(item) not in _PLAIN_TYPES:
            return False
    return True


def _judge_value(got, want) -> dict:
    """A functional test's record: the program has returned `got`; from here on it is the harness's code."""
    try:
        if compare_values(got, want):
            return {"ok": True}
        return {"ok": False, "why": f"expected {_short(want)}, got {_short(got)}"}
    except Exception as exc:  # noqa: BLE001
        if not _is_plain(got):  # the comparison ran the program's own __eq__/__bool__ (e.g. a numpy array)
            return {"ok": False, "why": f"returned a {type(got).__name__} that cannot be compared with "
                    f"{_short(want)}: {type(exc).__name__}: {str(exc)[:200]}"}
        return _harness_error("comparing the return value failed", exc)


def _run_program(job: dict, test: dict, namespace: dict):
    """Everything the program under test executes, and nothing else; returns a functional call's result."""
    exec(compile(job["code"], "solution.py", "exec"), namespace)
    if test["type"] == "functional":
        solution = namespace.get("Solution")
        if isinstance(solution, type):
            target = getattr(solution(), test["fn_name"])
        else:
            target = namespace[test["fn_name"]]
        return target(*test["args"])
    if test["type"] == "assert":
        exec(test["code"], namespace)  # check() calls the program: what fails in it is the program's
        if test["entry"] and callable(namespace.get("check")):
            namespace["check"](eval(test["entry"], namespace))  # noqa: S307 - inside the sandbox
    return None


def _run_test_in_child(job: dict, test: dict, report_fd: int) -> None:
    """Body of the forked child: run the program on one prepared test, write one JSON record to `report_fd`.

    Only `_run_program` sits inside the catch-all that turns an exception into `wrong`; the harness's own
    steps around it (the prelude, the comparison) report a failure as an `error` instead.
    """
    def report(record: dict) -> None:
        os.write(report_fd, json.dumps(record).encode()[:3900])

    kind = test["type"]
    namespace = {"__name__": "__main__" if kind == "stdin" else "solution", "__builtins__": __builtins__}
    if kind != "stdin":
        try:
            exec(PRELUDE, namespace)
        except Exception as exc:  # noqa: BLE001 - our imports, before the program runs
            report(_harness_error("the LeetCode prelude failed", exc))
            return
    try:
        got = _run_program(job, test, namespace)
    except SystemExit as exc:
        if kind == "stdin" and exc.code in (None, 0):
            report({"ok": True})
        else:
            report({"ok": False, "why": f"SystemExit({exc.code!r})"})
    except AssertionError:
        frame = traceback.extract_tb(sys.exc_info()[2])[-1]
        report({"ok": False, "why": f"assertion failed: {frame.line!s:.200}"})
    except BaseException as exc:  # noqa: BLE001 - the program's own failure is a test result
        report({"ok": False, "why": f"{type(exc).__name__}: {str(exc)[:200]}"})
    else:
        report(_judge_value(got, test["want"]) if kind == "functional" else {"ok": True})


def _wait(pid: int, deadline: float) -> int | None:
    """Wait for `pid` until `deadline` (monotonic); its wait status, or None on timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if pidfd is not None:
                os.close(pidfd)
            return status
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if pidfd is not None:
                os.close(pidfd)
            return None
        if pidfd is not None:
            select.select([pidfd], [], [], remaining)
        else:
            time.sleep(min(remaining, 0.002))


def _read_all(fd: int) -> bytes:
    """What is in the pipe now. Non-blocking: a leftover process that escaped the process group may still
    hold the write end, and the record was written before the child exited."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run_one(job: dict, index: int, test: dict, deadline: float, limit: str = "") -> dict:
    """Fork a child for one prepared test (`prepare_test`); turn what it did into {status, detail, ms}.

    `deadline` (monotonic) ends the test; `limit` names the limit it stands for, for a timeout's detail."""
    workdir = job["workdir"]
    # The harness's files are opened here and unlinked at once: the program (which may `rm -rf ~`, and
    # HOME is this directory) cannot see, delete or swap them, and the parent reads through its own fds.
    stdin_path = os.path.join(workdir, f".stdin{index}")
    with open(stdin_path, "w") as f:
        f.write(test["input"] if test["type"] == "stdin" else "")
    stdin_fd = os.open(stdin_path, os.O_RDONLY)
    out_fds = []
    for name in (f".stdout{index}", f".stderr{index}"):
        path = os.path.join(workdir, name)
        out_fds.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
        os.unlink(path)
    os.unlink(stdin_path)
    stdout_fd, stderr_fd = out_fds
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: becomes the untrusted program
        try:
            os.close(read_end)
            os.setpgid(0, 0)
            # copied above 0-3 first: a source may itself be one of the targets (a descriptor this
            # process had, e.g. the job pipe, freed a low number) and be overwritten before it is used
            sources = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (stdin_fd, stdout_fd, stderr_fd, write_end)]
            for target, source in enumerate(sources):
                os.dup2(source, target)
            os.closerange(4, 65536)
            sys.stdin = open(0, "r", closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            _limit_child(job)
            _run_test_in_child(job, test, 3)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)
    os.close(stdin_fd)
    os.close(stderr_fd)
    try:
        return _judge_child(job, test, pid, read_end, write_end, stdout_fd, deadline, started, limit)
    finally:
        os.close(stdout_fd)


def _judge_child(job: dict, test: dict, pid: int, read_end: int, write_end: int, stdout_fd: int,
                 deadline: float, started: float, limit: str) -> dict:
    os.close(write_end)
    status = _wait(pid, deadline)
    ms = (time.monotonic() - started) * 1000
    try:
        os.killpg(pid, signal.SIGKILL)  # the child and whatever it left in its group
    except (ProcessLookupError, PermissionError):
        pass
    if status is None:
        os.waitpid(pid, 0)
        os.close(read_end)
        return {"status": "timeout", "detail": limit or f"wall-clock limit ({job['timeout_s']:g} s for all tests)",
                "ms": ms}
    raw = _read_all(read_end)
    os.close(read_end)
    try:
        record = json.loads(raw.decode()) if raw else None
    except ValueError:
        record = None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and record is None:
            return {"status": "timeout", "detail": f"CPU-time limit ({job['cpu_s']:g} s per test, signal {sig})",
                    "ms": ms}
        if sig == signal.SIGXFSZ:
            return {"status": "wrong", "detail": f"output exceeded {job['fsize_mb']} MiB", "ms": ms}
        return {"status": "wrong", "detail": f"killed by signal {sig}", "ms": ms}
    if record is None:
        return {"status": "wrong", "detail": "the program ended before the harness could finish "
                "(os._exit or a crash)", "ms": ms}
    if not record.get("ok"):
        return {"status": "error" if record.get("error") else "wrong", "detail": record.get("why", ""),
                "ms": ms}
    if test["type"] == "stdin":
        os.lseek(stdout_fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(stdout_fd), errors="replace") as f:
            got = f.read(int(job["fsize_mb"]) * 1024 * 1024)
        try:
            ok, why = compare_stdout(got, test["output"])
        except Exception as exc:  # noqa: BLE001 - both sides are plain text: a failure here is our bug
            return {"status": "error", "detail": f"harness failure: comparing stdout failed: "
                    f"{type(exc).__name__}: {str(exc)[:200]}", "ms": ms}
        if not ok:
            return {"status": "wrong", "detail": f"wrong output: {why}", "ms": ms}
    return {"status": "passed", "detail": "", "ms": ms}


def run_all(job: dict, isolation: list[str], missing: list[str]) -> dict:
    """Run the tests in order, each under `test_timeout_s` (wall) and `cpu_s` (CPU), all of them within
    `timeout_s`. Stops at the first test that does not pass unless `all_tests`: the verdict is decided by
    then, and a wrong program would otherwise spend a timeout on every remaining test. Running out of the
    problem's budget always stops."""
    started = time.monotonic()
    budget = float(job["timeout_s"])
    problem_deadline = started + budget
    per_test = job.get("test_timeout_s")
    results = []
    for index, test in enumerate(job["tests"]):
        now = time.monotonic()
        if now >= problem_deadline:
            results.append({"status": "timeout", "detail": f"no time left of {budget:g} s for all tests",
                            "ms": 0.0})
            break
        deadline, limit = problem_deadline, f"wall-clock limit ({budget:g} s for all tests)"
        if per_test is not None and now + float(per_test) < problem_deadline:
            deadline, limit = now + float(per_test), f"time limit ({float(per_test):g} s per test)"
        try:
            prepared = prepare_test(test)  # before the program runs: a broken test is an error, never wrong
        except MalformedTest as exc:
            result = {"status": "error", "detail": f"malformed test: {exc}", "ms": 0.0}
        else:
            result = run_one(job, index, prepared, deadline, limit)
        results.append(result)
        if result["status"] != "passed" and not job.get("all_tests"):
            break
    return {"results": results, "total": len(job["tests"]), "isolation": isolation,
            "isolation_missing": missing}


def run_job(job_fd: int, report_fd: int) -> int:
    """One program, in a process of its own: read the job, confine this process, run the tests in its PID-1
    child, write the report line to `report_fd`; the exit code."""
    with os.fdopen(job_fd, "rb") as source:
        job = json.loads(source.read())
    os.environ.clear()
    os.environ.update(job["env"])
    isolation, missing, _ = confine(job)
    # after the mount: the work directory is now the private tmpfs, not the host's folder beneath it
    # (a relative path written by the program would otherwise hit that read-only, host-owned folder)
    os.chdir(job["workdir"])
    pid = os.fork()  # in a new PID namespace this child is its PID 1: its exit kills every leftover
    if pid == 0:
        try:
            report = run_all(job, isolation, missing)
            os.write(report_fd, (json.dumps(report) + "\n").encode())
        except BaseException as exc:  # noqa: BLE001 - a runner failure must reach the host as "error"
            _report_error(report_fd, exc)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if status else 0


def _report_error(report_fd: int, exc: BaseException) -> None:
    os.write(report_fd, (json.dumps({"runner_error": f"{type(exc).__name__}: {exc}"}) + "\n").encode())


def serve(sock_fd: int) -> None:
    """The pre-started runner (`sandbox.py`'s server): per request, fork a process that runs one job.

    A request is one message carrying two descriptors, the job's pipe and the report's. This process never
    reads a job (so no program's tests or code stay in the memory every later job is forked from) and never
    confines itself: each forked job takes fresh namespaces, its own tmpfs and uid, and its own session, so
    the host can kill it by process group. It answers each request with the job's pid and exits when the
    host closes the socket.
    """
    sock = socket.socket(fileno=sock_fd)
    # the prelude's stdlib modules, imported once: every test's exec(PRELUDE) then only binds names
    # (random reseeds itself in each forked child: Python registers that at fork)
    exec(PRELUDE, {})
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished jobs
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 16, 2)
        except OSError:
            return
        if not message or len(fds) != 2:
            return
        pid = os.fork()
        if pid == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the job waits for its own PID-1 child
            os.setsid()
            code = 1
            try:
                code = run_job(*fds)
            except BaseException as exc:  # noqa: BLE001 - the host must hear why, not only see EOF
                _report_error(fds[1], exc)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        sock.sendall(f"{pid}\n".encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]))
