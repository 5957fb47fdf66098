"""Shared fixtures: the real data beside the checkout, a local Ray, the built-in model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DED_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (MATH-500, AIME, LiveCodeBench, ...). CI always has it; a user's clone may not."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set DED_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session: 2 CPUs, no dashboard, bound to 127.0.0.1."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", configure_logging=False)
    yield ray
    ray.shutdown()
