"""The pre-started runner: one per host process, reused across programs, replaced when it dies; each program
still gets a private work directory of its own (its current directory)."""

from __future__ import annotations

import os
import signal

from ded_ray.verifiers import sandbox
from ded_ray.verifiers.code import run_tests

ECHO = [{"type": "stdin", "input": "", "output": "safe"}]


def test_a_relative_path_is_written_in_the_private_work_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the host's own directory must stay untouched
    program = ("open('notes.txt', 'w').write('safe')\n"
               "import os\nprint(open('notes.txt').read() if os.getcwd() == os.environ['HOME'] else 'elsewhere')")
    verdict = run_tests(program, ECHO)
    assert verdict.status == "correct", verdict.detail
    assert not (tmp_path / "notes.txt").exists()
    second = run_tests("import os\nprint('safe' if not os.path.exists('notes.txt') else 'left over')", ECHO)
    assert second.status == "correct", second.detail  # the next program starts from an empty directory


def test_the_runner_is_reused_and_replaced_when_it_dies():
    assert run_tests("print('safe')", ECHO).status == "correct"
    runner = sandbox._SERVER._process.pid
    assert run_tests("print('safe')", ECHO).status == "correct"
    assert sandbox._SERVER._process.pid == runner  # no interpreter start per program

    os.kill(runner, signal.SIGKILL)
    verdict = run_tests("print('safe')", ECHO)
    assert verdict.status == "correct", verdict.detail
    assert sandbox._SERVER._process.pid != runner


def test_programs_forked_from_one_runner_do_not_share_random_state():
    draws = set()
    for _ in range(3):
        verdict = run_tests("import random\nprint(random.random())", [{"type": "stdin", "input": "", "output": "x"}])
        assert verdict.status == "wrong", verdict.detail
        draws.add(verdict.detail.split("got '")[1].split("'")[0])
    assert len(draws) == 3, draws
