"""Hostile programs are contained: right status, the host (files, processes, secrets, network) unchanged.

Destructive programs only ever target a fake HOME with a canary file and a canary directory made by the
test; before the `rm -rf` test runs, a harmless probe checks that the sandbox really redirects HOME and
cannot write outside its work directory (the test is skipped rather than run unprotected).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ded_ray.verifiers.code import run_tests

ECHO = [{"type": "stdin", "input": "", "output": "safe"}]


def sandbox_uid(detail: str) -> int | None:
    match = re.search(r"uid=(\d+)", detail)
    return int(match.group(1)) if match else None


def processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """HOME of the host process points at a throwaway folder holding a canary and a ~/.ray 'secret'."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / "canary.txt").write_text("still here")
    (home / ".ray" / "session_token").write_text("ray-secret-4711")
    monkeypatch.setenv("HOME", str(home))
    return home


def test_probe_home_redirected_and_host_read_only(fake_home, tmp_path):
    probe = tmp_path / "probe_target"
    probe.mkdir()
    program = f"""
import os
home = os.path.expanduser("~")
try:
    open({str(probe / 'written')!r}, "w").write("x")
    wrote = True
except OSError:
    wrote = False
print("safe" if home != {str(fake_home)!r} and not home.startswith("/root") and not wrote else "UNSAFE")
"""
    verdict = run_tests(program, ECHO)
    assert verdict.status == "correct", verdict.detail
    assert not (probe / "written").exists()


def test_rm_rf_home_leaves_host_files(fake_home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("still here")
    probe = run_tests(f"import os\nprint('safe' if os.path.expanduser('~') != {str(fake_home)!r} else 'no')",
                      ECHO)
    if probe.status != "correct":
        pytest.skip(f"HOME is not redirected ({probe.detail}); refusing to run rm -rf")
    program = f"""
import os, shutil
os.system("rm -rf ~")
os.system("rm -rf {fake_home} {outside}")
shutil.rmtree({str(outside)!r}, ignore_errors=True)
print("safe")
"""
    verdict = run_tests(program, ECHO)
    assert verdict.status == "correct", verdict.detail  # it ran to the end, and destroyed nothing
    assert (fake_home / "canary.txt").read_text() == "still here"
    assert (outside / "canary.txt").read_text() == "still here"


def test_secrets_are_unreachable(fake_home, monkeypatch):
    monkeypatch.setenv("DED_TEST_API_TOKEN", "tok-123-secret")
    program = f"""
import os
found = [os.environ.get("DED_TEST_API_TOKEN", "")]
for path in ("~/.ray/session_token", {str(fake_home / '.ray' / 'session_token')!r}):
    try:
        found.append(open(os.path.expanduser(path)).read())
    except OSError:
        pass
print("".join(found))
"""
    verdict = run_tests(program, [{"type": "stdin", "input": "", "output": "tok-123-secretray-secret-4711"}])
    assert verdict.status == "wrong", verdict.detail
    leak = run_tests(program, [{"type": "stdin", "input": "", "output": ""}])
    assert leak.status == "correct", leak.detail  # it printed nothing at all: no secret reached it


def test_socket_cannot_reach_the_host():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = f"""
import socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
s.sendall(b"exfiltrate")
print("connected")
"""
    verdict = run_tests(program, [{"type": "stdin", "input": "", "output": "connected"}], timeout_s=5)
    thread.join()
    server.close()
    assert verdict.status == "wrong" and "netns" in verdict.detail, verdict.detail
    assert accepted == []


def test_infinite_loop_times_out():
    started = time.monotonic()
    verdict = run_tests("while True:\n    pass", ECHO, timeout_s=2)
    assert verdict.status == "timeout", verdict.detail
    assert time.monotonic() - started < 30  # hang guard, not a speed check


def test_ten_gigabyte_allocation_fails_inside():
    verdict = run_tests("x = bytearray(10 * 1024 ** 3)\nprint('safe')", ECHO)
    assert verdict.status == "wrong" and "MemoryError" in verdict.detail, verdict.detail


def test_fork_bomb_is_contained_and_cleaned_up():
    bomb = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    normal = "print('safe')"
    with ThreadPoolExecutor(max_workers=2) as threads:  # another check runs beside the bomb
        bomb_future = threads.submit(run_tests, bomb, ECHO, 3.0)
        time.sleep(0.3)
        normal_verdict = threads.submit(run_tests, normal, ECHO).result()
        verdict = bomb_future.result()
    assert normal_verdict.status == "correct", normal_verdict.detail
    assert verdict.status in ("timeout", "wrong"), verdict.detail
    assert "nproc=" in verdict.detail
    uid = sandbox_uid(verdict.detail)
    if uid is not None:  # every process of the bomb is gone (the kernel reaps a dead PID namespace
        deadline = time.monotonic() + 20  # asynchronously: on a loaded machine that takes a moment)
        while processes_of(uid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_of(uid) == []


def test_output_flood_is_limited():
    verdict = run_tests("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", ECHO, timeout_s=10)
    assert verdict.status in ("wrong", "timeout"), verdict.detail
