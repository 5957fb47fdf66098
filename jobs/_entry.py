"""The shared body of the job entry points: run one `ded` command, say where its run directory is, exit 0/1.

`python jobs/<step>.py --config PATH [key.sub=value ...] [step flags]` is `ded <command> ...` with:
- the run directory (`run.root`/`run.name`, a local path or a pyarrow-filesystem URI) logged before and after,
  so the job's logs (`ray job logs <id>`) always say where the outputs are;
- a warning when a relative `run.root` would land inside the job's temporary working_dir copy on the head;
- exit status 0 on success and 1 on any failure (bad config, a failed stage), with the reason logged, so
  `ray job status` shows FAILED.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from ded_ray import cli
from ded_ray.config import load_config
from ded_ray.errors import UserError
from ded_ray.log import log


def run_dir_of(argv: list[str]) -> tuple[str, str]:
    """(run directory as configured, absolute form) for the `--config` and `key=value` overrides in `argv`.

    Step flags (`--corpus`, `--teacher`, ...) are left to the step's own parser.
    """
    args, _step_flags = cli.build_parser().parse_known_args(["run", *argv])
    config = load_config(args.config, [o for o in args.overrides if "=" in o])
    uri = f"{config.run.root.rstrip('/')}/{config.run.name}"
    absolute = uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))
    return uri, absolute


def main(
    command: str,
    argv: list[str] | None = None,
    complete_args: Callable[[list[str], str], list[str]] | None = None,
) -> int:
    """Run `ded <command> <argv>` (default argv: this process's) as a job; returns the exit status.

    `complete_args(argv, run_dir)` may add step flags that default to files in the run directory.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        uri, absolute = run_dir_of(argv)
    except UserError as exc:
        log(f"job {command}: {exc}")
        return cli.EXIT_FAILED
    if complete_args is not None:
        argv = complete_args(argv, absolute)
    log(f"job {command}: run directory {absolute} (Ray at {os.environ.get('RAY_ADDRESS', 'a local instance')})")
    if "://" not in uri and not os.path.isabs(os.path.expanduser(uri)) and os.environ.get("RAY_ADDRESS"):
        log("job: run.root is relative, so outputs go into this job's working_dir copy on the head node; "
            "pass run.root=s3://... (or a shared path) to keep them")
    try:
        status = cli.main([command, *argv])
    except Exception:  # any failure: log it, then a non-zero status for `ray job status`
        log(f"job {command} failed:\n{traceback.format_exc()}")
        status = cli.EXIT_FAILED
    log(f"job {command}: {'finished' if status == 0 else f'FAILED (exit {status})'}; run directory {absolute}")
    return status
