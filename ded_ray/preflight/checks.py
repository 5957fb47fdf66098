"""`ded plan`'s rules: does each stage's demand fit the machines? Each rule returns `Finding`s; a finding that
is not ok names the config key that fixes it.

The arithmetic, and where it is rough:
- weights: parameters x dtype bytes, split over tensor-parallel ranks;
- vLLM on a GPU reserves `gpu_memory_utilization` of it; what weights and `ENGINE_OVERHEAD_GIB` (activations,
  CUDA graphs: rough) leave is KV cache, `kv_bytes_per_token` each token (vLLM's accounting); vLLM refuses to
  start unless one sequence of `max_model_len` tokens fits, and a replica runs about room / context sequences
  at once;
- on the CPU build the KV cache is the fixed `kv_cache_memory_bytes` (ded_ray.vllm_env);
- training: `train/memory.py`'s plan per GPU; checkpoints hold bf16 weights plus fp32 Adam states and master
  weights (14 bytes a parameter), the exported student its weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ded_ray.config import DEDConfig, TrainConfig
from ded_ray.preflight.demands import EngineDemand
from ded_ray.preflight.machines import Machines, NodeType
from ded_ray.preflight.model_facts import ModelFacts

GiB = 1024**3
ENGINE_OVERHEAD_GIB = 2.0  # per GPU: vLLM's activation workspace and CUDA graphs (rough)
CHECKPOINT_BYTES_PER_PARAM = 14  # bf16 weights 2 + fp32 master 4 + Adam moments 8
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class Finding:
    stage: str
    ok: bool
    text: str
    fix: str | None = None

    def __str__(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} [{self.stage}] {self.text}" + (f"\n       fix: {self.fix}" if self.fix else "")


def _dtype_bytes(dtype: str, gpu: bool) -> int:
    return _DTYPE_BYTES.get(dtype, 2 if gpu else 4)  # auto: bf16 on GPUs; fp32 on a CPU without native bf16


def context_findings(d: EngineDemand) -> list[Finding]:
    """Prompt + max_tokens within max_model_len, and max_model_len within the model's positions."""
    keys, limit = d.config_keys, d.model.max_position_embeddings
    effective = d.max_model_len or limit
    out = []
    if d.max_model_len and limit and d.max_model_len > limit:
        out.append(Finding(d.stage, False, f"max_model_len {d.max_model_len} exceeds {d.model.name}'s "
                           f"max_position_embeddings {limit}", f"{keys['max_model_len']}={limit}"))
    if effective is None:
        return out + [Finding(d.stage, True, "context not checked: no max_model_len and no max_position_embeddings")]
    need = d.context_needed
    text = (f"longest prompt {d.prompts} + max_tokens {d.max_tokens} = {need} tokens, max_model_len {effective}"
            f" ({d.prompts.count} prompts)")
    if need > effective:
        fix = (f"{keys['max_model_len']}={_round_up(need)}" if not limit or _round_up(need) <= limit else
               f"lower {keys['max_tokens']} to {effective - d.prompts.longest}")
        return out + [Finding(d.stage, False, text + ": generations would be cut off", fix)]
    return out + [Finding(d.stage, True, text)]


def _round_up(tokens: int, step: int = 1024) -> int:
    return int(math.ceil(tokens / step) * step)


def placement_findings(d: EngineDemand, machines: Machines) -> tuple[list[Finding], NodeType | None]:
    """A node type that hosts one actor/replica, and GPUs that match tensor parallelism."""
    keys, out = d.config_keys, []
    if d.engine == "vllm" and d.gpus >= 1 and d.gpus != d.tensor_parallel:
        out.append(Finding(d.stage, False, f"{d.gpus:g} GPUs per replica but tensor_parallel_size x "
                           f"pipeline_parallel_size = {d.tensor_parallel}: vLLM uses one GPU per rank",
                           f"{keys['gpus']}={d.tensor_parallel} or {keys['tensor_parallel']}={int(d.gpus)}"))
    hosts = machines.hosts(d.cpus, d.gpus)
    if not hosts:
        out.append(Finding(d.stage, False, f"no node of {machines.where} has {d.cpus:g} CPUs and {d.gpus:g} GPUs "
                           "for one replica", f"lower {keys['gpus']} or add a node type that has them"))
        return out, None
    host = max(hosts, key=lambda n: (n.gpu_memory_gib or 0, n.gpus))
    lo, hi = d.replicas
    # The Ray Data tasks around the engine (prompting, fan-out, ray.data.llm's tokenize and detokenize, the
    # clients of a Serve teacher) need a CPU beside it: engine actors holding every CPU there is stall the
    # stage, with no error (measured: the vllm engine with both CPUs of a 2-CPU local Ray).
    if machines.total_cpus and machines.total_cpus - lo * d.cpus < 1:
        out.append(Finding(d.stage, False, f"{lo} x {d.cpus:g} CPUs for the engine leave no CPU of "
                           f"{machines.where}'s {machines.total_cpus:g} for the stage's Ray Data tasks: it would stall",
                           f"{keys['cpus']}<={(machines.total_cpus - 1) / max(lo, 1):g}, "
                           "or more logical CPUs for a local Ray (ray.num_cpus)"))
    if d.gpus and hi * d.gpus > machines.total_gpus:
        out.append(Finding(d.stage, True, f"at most {int(machines.total_gpus // d.gpus)} of the {hi} replicas "
                           f"fit {machines.where}'s {machines.total_gpus:g} GPUs (the pool will not grow further)"))
    out.append(Finding(d.stage, True, f"{d.engine}, {d.gpus:g} GPU(s) x TP {d.tensor_parallel}, replicas "
                       f"{lo}..{hi}, on {host.name}"))
    return out, host


def memory_findings(d: EngineDemand, host: NodeType, fallback_gpu_gib: float, utilization: float) -> list[Finding]:
    """Weights and KV cache of one replica on its host."""
    keys, facts, need = d.config_keys, d.model, d.context_needed
    gpu = d.gpus > 0
    width = _dtype_bytes(d.dtype, gpu)
    kv_per_token = facts.kv_bytes_per_token(width)
    if d.engine == "hf":
        weights = facts.weight_bytes(width)
        if host.memory_gib and weights > host.memory_gib * GiB:
            return [Finding(d.stage, False, f"{facts.name}'s weights ({weights / GiB:.0f} GiB) exceed "
                            f"{host.name}'s memory ({host.memory_gib:.0f} GiB)", "serve it with vllm on GPUs")]
        return [Finding(d.stage, True, f"transformers engine, weights {weights / GiB:.1f} GiB in host memory")]
    if not gpu:
        from ded_ray.vllm_env import CPU_KV_CACHE_BYTES

        room = float(d.engine_kwargs.get("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES))
        where = "the CPU build's KV cache (kv_cache_memory_bytes)"
    else:
        gpu_gib = host.gpu_memory_gib or fallback_gpu_gib
        util = float(d.engine_kwargs.get("gpu_memory_utilization", utilization))
        per_gpu = gpu_gib * GiB * util - facts.weight_bytes(width) / d.tensor_parallel - ENGINE_OVERHEAD_GIB * GiB
        if per_gpu <= 0:
            return [Finding(d.stage, False, f"{facts.name}'s weights ({facts.weight_bytes(width) / GiB:.0f} GiB) do "
                            f"not fit {d.tensor_parallel} x {gpu_gib:.0f} GiB at utilization {util}",
                            f"{keys['tensor_parallel']}={2 * d.tensor_parallel} and {keys['gpus']}="
                            f"{2 * d.tensor_parallel}")]
        room = per_gpu * d.tensor_parallel
        where = f"KV cache ({d.tensor_parallel} x {gpu_gib:.0f} GiB GPU at {util})"
    tokens = int(room // kv_per_token)
    text = (f"{where}: {room / GiB:.1f} GiB = {tokens} tokens at {kv_per_token // 1024} KiB each, "
            f"{tokens // max(1, need)} full-length sequences at once")
    if tokens < need:
        fix = (f"{keys['gpus']}>0 with vLLM on GPUs" if not gpu else
               f"{keys['tensor_parallel']}={2 * d.tensor_parallel}, or lower {keys['max_model_len']}")
        return [Finding(d.stage, False, text + f": not one sequence of {need} tokens fits", fix)]
    return [Finding(d.stage, True, text)]


def engine_findings(d: EngineDemand, machines: Machines, config: DEDConfig) -> list[Finding]:
    out = context_findings(d)
    placed, host = placement_findings(d, machines)
    out += placed
    if host is not None:
        out += memory_findings(d, host, config.train.gpu_memory_gib, config.preflight.gpu_memory_utilization)
    return out


def train_findings(stage: str, train: TrainConfig, facts: ModelFacts, machines: Machines, run_root: str,
                   epochs_note: str = "") -> list[Finding]:
    """Memory per GPU (train/memory.py), GPUs to place the ranks, host RAM for offload, disk for checkpoints."""
    from ded_ray.train.loss import resolve_loss
    from ded_ray.train.memory import ModelShape, memory_fixes, plan_memory, planned_attention

    out = []
    gpus = train.num_workers if train.use_gpu else 0
    per_worker_cpus = train.num_cpus_per_worker
    one_node = machines.hosts(per_worker_cpus * train.num_workers, gpus)
    if one_node:
        host = max(one_node, key=lambda n: (n.disk_gib or 0, n.gpu_memory_gib or 0))  # the checkpoints' disk
        out.append(Finding(stage, True, f"{train.num_workers} ranks ({train.strategy}"
                           f"{f' ZeRO-{train.zero_stage}' if train.strategy == 'deepspeed' else ''}) on one {host.name}"))
    elif gpus and machines.total_gpus >= gpus:
        host = max(machines.nodes, key=lambda n: n.gpus)
        out.append(Finding(stage, True, f"{train.num_workers} ranks span nodes (no node type has {gpus} GPUs): "
                           "gradients cross the network"))
    else:
        return [Finding(stage, False, f"{train.num_workers} ranks need {gpus} GPUs and {per_worker_cpus:g} CPUs "
                        f"each; {machines.where} has no room for them", "lower train.num_workers or add nodes")]

    shape = ModelShape.from_config(facts.num_params, facts.config)
    if train.use_gpu and shape is not None:
        est = plan_memory(shape, train, resolve_loss(train), planned_attention(train))
        budget = min(train.gpu_memory_gib, host.gpu_memory_gib or train.gpu_memory_gib)
        text = f"memory plan {est.total_bytes / GiB:.1f} GiB per GPU of {budget:.0f} ({est.loss} loss, {est.tokens} tokens)"
        if est.total_bytes > budget * GiB:
            fixes = memory_fixes(est, train.model_copy(update={"gpu_memory_gib": budget}))
            out.append(Finding(stage, False, text, "; ".join(fixes) or "a larger GPU"))
        else:
            out.append(Finding(stage, True, text))
        ranks_per_node = min(train.num_workers, int(host.gpus) or 1)
        if est.cpu_bytes and host.memory_gib and est.cpu_bytes * ranks_per_node > host.memory_gib * GiB:
            out.append(Finding(stage, False, f"offloaded states {est.cpu_bytes * ranks_per_node / GiB:.0f} GiB exceed "
                               f"{host.name}'s {host.memory_gib:.0f} GiB of host memory", "train.offload_optimizer=false "
                               "and more GPUs, or a node type with more memory"))

    width = 2 if train.bf16 else 4
    checkpoints = (train.keep_checkpoints or train.epochs) + 1  # the kept ones, plus the one being written
    needed = facts.num_params * (CHECKPOINT_BYTES_PER_PARAM * checkpoints + width)
    text = f"checkpoints {checkpoints} x {facts.num_params * CHECKPOINT_BYTES_PER_PARAM / GiB:.0f} GiB + student " \
           f"{facts.num_params * width / GiB:.0f} GiB = {needed / GiB:.0f} GiB{epochs_note}"
    if "://" in run_root and not run_root.startswith("file://"):
        out.append(Finding(stage, True, text + f" in {run_root.split('://')[0]}:// storage"))
    elif host.disk_gib is not None and needed > host.disk_gib * GiB:
        out.append(Finding(stage, False, text + f" > {host.name}'s disk ({host.disk_gib:.0f} GiB)",
                           "run.root=s3://BUCKET/... (object storage), or train.keep_checkpoints=1"))
    else:
        out.append(Finding(stage, True, text + (f" of {host.name}'s {host.disk_gib:.0f} GiB disk" if host.disk_gib else "")))
    return out


def diagnostics_findings(config: DEDConfig, facts: ModelFacts, machines: Machines) -> list[Finding]:
    """The smoke test's diagnostics load the base and the tuned student one after the other."""
    cfg, stage = config.smoke.diagnostics, "smoke diagnostics"
    hosts = machines.hosts(cfg.cpus, cfg.gpus)
    if not hosts:
        return [Finding(stage, False, f"no node has {cfg.cpus:g} CPUs and {cfg.gpus:g} GPUs",
                        "lower smoke.diagnostics.gpus / cpus")]
    # On GPUs: the best GPU node; on CPU the task may land on any node with a free CPU: the smallest one counts.
    host = (max(hosts, key=lambda n: n.gpu_memory_gib or 0) if cfg.gpus else
            min(hosts, key=lambda n: n.memory_gib if n.memory_gib is not None else float("inf")))
    weights = facts.weight_bytes(_dtype_bytes(cfg.dtype, cfg.gpus > 0))
    room = (cfg.gpus * (host.gpu_memory_gib or config.train.gpu_memory_gib) if cfg.gpus else host.memory_gib)
    text = f"{facts.name} in {'bf16' if cfg.gpus else 'fp32'}: {weights / GiB:.1f} GiB on {host.name}"
    if room is not None and weights > room * GiB * 0.9:
        gpu_gib = max((n.gpu_memory_gib or 0) for n in machines.nodes) or config.train.gpu_memory_gib
        need = math.ceil(facts.weight_bytes(2) / GiB / 0.9 / gpu_gib)  # in bf16 on GPUs
        return [Finding(stage, False, text + f" ({room:.0f} GiB there)", f"smoke.diagnostics.gpus={need}")]
    return [Finding(stage, True, text)]
