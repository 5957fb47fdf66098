"""Sandboxed programs import the interpreter's packages wherever the project sits.

Started as root, the sandbox drops to a uid of its own; a venv inside a folder only its owner may enter (a
`mktemp -d` clone, a 0700 home) was unreadable to that uid, and LeetCode solutions importing
sortedcontainers failed in such a clone. The venv here is made inside a 0700 folder and runs the sandbox.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import venv
from pathlib import Path

import pytest

CHECK = """
from ded_ray.verifiers.code import run_tests
verdict = run_tests("import ded_probe_module\\nprint(ded_probe_module.ANSWER)",
                    [{"type": "stdin", "input": "", "output": "42"}])
print(verdict.status, verdict.detail)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root-started sandbox switches to a uid of its own")
def test_packages_of_a_venv_inside_a_private_folder_import_in_the_sandbox(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    venv.create(private / "venv", with_pip=False)
    packages = next((private / "venv" / "lib").glob("python*/site-packages"))
    (packages / "ded_probe_module.py").write_text("ANSWER = 42\n")
    # this test's own packages (ded_ray, its dependencies), as `import` lines of a .pth file run them
    (packages / "outer.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n"
                                                for p in site.getsitepackages()))
    os.chmod(private, 0o700)

    result = subprocess.run([str(private / "venv" / "bin" / "python"), "-c", CHECK], capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 0, result.stderr[-3000:]
    status, detail = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "correct", detail
    # the topmost private folder above the venv (pytest's own tmp root is 0700 too) is covered, the venv bound back
    hidden = re.findall(r"hidden:([^,]+)", detail)
    assert any(private == Path(h) or Path(h) in private.parents for h in hidden), detail
