"""The run directory: where a run's stages, rejected rows, manifest and artefacts live, and how it resumes.

- `folders`: the folders and files (`RunDir`, `StageDir`, JSON artefacts);
- `runner`: `run_stage`, the one place a plan stage is written, streamed part by part;
- `manifest`: what a run records about itself, and `open_run` (which refuses a folder it cannot resume).
"""

from ded_ray.rundir.folders import EVAL_FILE, MANIFEST, SUCCESS, RunDir, StageDir
from ded_ray.rundir.manifest import open_run
from ded_ray.rundir.runner import StageResult, kept_rows, run_stage

__all__ = ["EVAL_FILE", "MANIFEST", "SUCCESS", "RunDir", "StageDir", "StageResult", "kept_rows", "open_run", "run_stage"]
