"""Start or join Ray: a local instance sized to this machine, the cluster we run on, or a Ray client.

- `address: local` starts a local Ray (all cores unless `num_cpus`), dashboard off or bound to 127.0.0.1;
  when `RAY_ADDRESS` is set (e.g. inside `ray job submit`) that cluster is joined instead.
- `address: auto` joins the cluster this process runs on.
- `address: ray://host:10001` connects as a Ray client.
"""

from __future__ import annotations

import os

import ray

from ded_ray.config import RayConfig
from ded_ray.log import log

LOCALHOST = "127.0.0.1"


def init_ray(config: RayConfig) -> None:
    """Idempotent: does nothing when Ray is already initialised in this process."""
    if ray.is_initialized():
        return
    address = config.address
    runtime_env = config.runtime_env or None
    if address == "local" and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    if address == "local":
        ray.init(
            num_cpus=config.num_cpus or os.cpu_count(),
            include_dashboard=config.dashboard,
            dashboard_host=LOCALHOST,
            runtime_env=runtime_env,
            log_to_driver=False,
            configure_logging=False,
        )
        log(f"started a local Ray with {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        log(f"joined Ray at {address}: {ray.cluster_resources()}")
    # Quiet the per-operator progress bars of Ray Data: our runner prints rows/s per stage instead.
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
