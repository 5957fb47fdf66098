"""Start or join Ray: a local instance sized to this machine, the cluster we run on, or a Ray client.

- `address: local` starts a local Ray (all cores unless `num_cpus`), dashboard off or bound to 127.0.0.1;
  when `RAY_ADDRESS` is set (e.g. inside `ray job submit`) that cluster is joined instead.
- `address: auto` joins the cluster this process runs on.
- `address: ray://host:10001` connects as a Ray client.

A models root (`models.root`, ded_ray/model_store.py) goes into the job's runtime_env env_vars, so every
worker on every node resolves models against it; the driver gets the same variables.
"""

from __future__ import annotations

import logging
import os

import ray

from ded_ray.config import ModelsConfig, RayConfig
from ded_ray.log import log
from ded_ray.model_store import models_env

LOCALHOST = "127.0.0.1"
CLIENT_ATTEMPTS = 3


def init_ray(config: RayConfig, models: ModelsConfig | None = None) -> None:
    """Idempotent: does not start Ray again when it is already initialised in this process.

    `models`: the config's models section; its root and revisions reach the workers through the runtime_env
    (they override the same keys of `config.runtime_env`). A Ray started before this call keeps the
    runtime_env it had: only this process learns the root then.
    """
    env = models_env(models.root, models.revisions) if models is not None else {}
    if ray.is_initialized():
        os.environ.update(env)
        return
    address = config.address
    runtime_env = with_env_vars(config.runtime_env, env) or None
    if address == "local" and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    if address == "local":
        # Ray 2.60 announces at WARNING, on every local start, whether token auth is on; this Ray binds to
        # 127.0.0.1 and the choice stays the user's (RAY_AUTH_MODE, ~/.ray/auth_token): not news each run
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(
            num_cpus=config.num_cpus or os.cpu_count(),
            include_dashboard=config.dashboard,
            dashboard_host=LOCALHOST,
            runtime_env=runtime_env,
            log_to_driver=False,
            configure_logging=False,
        )
        log(f"started a local Ray with {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
    elif address.startswith("ray://"):
        connect_client(address, runtime_env=runtime_env, log_to_driver=False)
        log(f"connected to Ray at {address}: {ray.cluster_resources()}")
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        log(f"joined Ray at {address}: {ray.cluster_resources()}")
    # After ray.init, on purpose: a local Ray's workers then get the variables from the runtime_env alone,
    # as a cluster's do, never by inheriting this process's environment.
    os.environ.update(env)
    quiet_ray_data()


def with_env_vars(runtime_env: dict, env: dict[str, str]) -> dict:
    """A copy of `runtime_env` with `env` added to its env_vars (ours win over the same keys)."""
    if not env:
        return dict(runtime_env)
    merged = dict(runtime_env)
    merged["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
    return merged


def connect_client(address: str, attempts: int = CLIENT_ATTEMPTS, **init_kwargs) -> None:
    """`ray.init("ray://host:port", **init_kwargs)`, tried again when the head fails to start our session.

    The head's client proxy starts one server process per client; in Ray 2.60 that start now and then
    fails on a busy head ("Starting Ray client server failed", seen in our CI), and the next connection
    gets a fresh one. Other errors (wrong address, bad token) are raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, **init_kwargs)
            return
        except ConnectionAbortedError as exc:
            reason = str(exc).strip().splitlines()[-1]
            if attempt == attempts:
                raise ConnectionAbortedError(
                    f"the Ray client server at {address} failed to start a session {attempts} times "
                    f"(last: {reason}); its logs are ray_client_server_*.err in the head's session log folder"
                ) from exc
            log(f"connecting to {address} failed ({reason}); trying again ({attempt + 1}/{attempts})")


def quiet_ray_data() -> None:
    """Our runner prints one progress line per part and stage; Ray Data's own chatter would drown it.

    Off: the per-operator progress bars, the INFO lines per dataset execution, and the high-memory
    detector, which warns on every small CPU actor pool (it compares use against a request of 0 bytes).
    """
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # ...which Ray Data then announces as a WARNING ("Progress bars disabled...") on the first execution
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    detectors = ctx.issue_detectors_config.detectors
    ctx.issue_detectors_config.detectors = [d for d in detectors if d.__name__ != "HighMemoryIssueDetector"]
    logging.getLogger("ray.data").setLevel(logging.WARNING)
