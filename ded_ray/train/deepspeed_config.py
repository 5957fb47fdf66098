"""DeepSpeed configuration built from `TrainConfig` (ZeRO stage, bf16, offload, clipping).

Gradient accumulation is driven by the training loop, not by DeepSpeed's counter: a packed step has a
variable number of micro-batches, so the loop marks the accumulation boundary itself
(`engine.set_gradient_accumulation_boundary`) and scales the loss by global target tokens. DeepSpeed's batch
fields are therefore nominal (1 micro-batch x 1 accumulation step per rank; train_batch_size is left for
DeepSpeed to derive from its world size); they only feed its bookkeeping.
"""

from __future__ import annotations

from typing import Any

from ded_ray.config import TrainConfig


def deepspeed_config(config: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed config dict for `config` (any number of ranks)."""
    if config.strategy != "deepspeed":
        raise ValueError(f"deepspeed_config needs train.strategy=deepspeed, got {config.strategy!r}")
    zero: dict[str, Any] = {"stage": config.zero_stage}
    if config.zero_stage >= 1:
        # overlap_comm pays off with CUDA streams; on CPU (gloo) it only adds buffers.
        zero.update(overlap_comm=config.use_gpu, contiguous_gradients=True)
    if config.zero_stage >= 2:
        zero.update(reduce_scatter=True, reduce_bucket_size=int(5e8), allgather_bucket_size=int(5e8))
    if config.zero_stage == 3:
        zero.update(
            # The final student/ is written from the consolidated 16-bit state dict.
            stage3_gather_16bit_weights_on_model_save=True,
            stage3_prefetch_bucket_size=int(5e7),
            stage3_param_persistence_threshold=int(1e5),
        )
    if config.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": config.use_gpu}
    if config.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": config.use_gpu}

    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": config.bf16},
        "steps_per_print": 10**9,  # metrics go through ray.train.report, not DeepSpeed's logger
        "wall_clock_breakdown": False,
    }
    if not config.use_gpu:
        # We pass a torch AdamW on CPU: DeepSpeed's own CPU Adam JIT-compiles for about a minute.
        ds["zero_force_ds_cpu_optimizer"] = False
    return ds
