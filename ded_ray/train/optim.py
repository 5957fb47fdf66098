"""AdamW and the learning-rate schedule (linear warmup, then cosine / linear decay or constant)."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ded_ray.config import TrainConfig


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Factor applied to the peak lr at optimizer step `step` (0-based): warmup ramps 1/w, 2/w, ... 1."""
    total_steps = max(total_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        raise ValueError(f"unknown lr_schedule {schedule!r}: use cosine, linear or constant")

    return factor


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    return int(math.ceil(config.warmup_ratio * total_steps))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D tensors), the usual LM practice.

    On GPU with ZeRO-Offload the optimizer runs on the host: DeepSpeed's vectorised CPU Adam (compiled once
    into the project cache). Everywhere else torch's AdamW (fused kernel on GPU); on CPU DeepSpeed's own
    optimizer would JIT-compile for about a minute per run, for no gain on 2 cores.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if config.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=config.learning_rate, adamw_mode=True)
    if config.use_gpu and config.strategy == "ddp":
        return torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    fn = lr_multiplier(config.lr_schedule, warmup_steps(config, total_steps), total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
