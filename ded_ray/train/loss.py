"""Token-level SFT loss, summed so that gradient accumulation and packing do not change its value.

The step loss is sum(token losses over the global batch) / (target tokens in the global batch): every target
token weighs the same whichever micro-batch, worker or packed row it lands in. Averaging per micro-batch
(mean of means) would make the loss depend on how samples were grouped, and packed and padded training
would then differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ded_ray.train.packing import MicroBatch
from ded_ray.train.tokenize import IGNORE_INDEX


def summed_token_loss(model: torch.nn.Module, micro: MicroBatch, device: torch.device | str) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropy over the micro-batch's target tokens; 0 when it has none.

    `model` is a causal LM (or a DDP / DeepSpeed wrapper of one) whose output has `.logits`.
    """
    out = model(**micro.model_inputs(device), use_cache=False)
    logits = out.logits
    targets = micro.targets.to(logits.device)
    # Upcast only the rows that carry a target: the full [T, vocab] logits in fp32 are the largest tensor of
    # a long-context step, and most positions of an SFT sample are prompt.
    keep = targets.view(-1) != IGNORE_INDEX
    picked = logits.view(-1, logits.size(-1))[keep].float()
    loss = F.cross_entropy(picked, targets.view(-1)[keep], reduction="sum")
    if not keep.any():
        # Keep the graph connected to every parameter (DDP and ZeRO expect a gradient for each) at zero cost.
        loss = loss + logits.sum() * 0.0
    return loss
