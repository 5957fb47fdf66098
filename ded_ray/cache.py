"""The project's cache dir: converted models, compiled ops. `DED_CACHE_DIR`, else ~/.cache/ded_ray."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("DED_CACHE_DIR") or Path.home() / ".cache" / "ded_ray").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
