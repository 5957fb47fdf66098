"""Token-level SFT loss, summed so that gradient accumulation and packing do not change its value.

The step loss is sum(token losses over the global batch) / (target tokens in the global batch): every target
token weighs the same whichever micro-batch, worker or packed row it lands in. Averaging per micro-batch
(mean of means) would make the loss depend on how samples were grouped, and packed and padded training
would then differ.

Three implementations of that sum (`train.loss`; memory.py counts what each keeps alive):

- plain: the model's logits [B, L, vocab], target rows upcast to fp32, cross-entropy. A long chain of thought
  is almost all target, so this holds full-vocabulary fp32 logits, log-probs and their gradient for every
  position: at 16k positions x 152k vocab each copy is 9.3 GiB.
- chunked: the model returns its final hidden states (its own lm_head runs on no position); lm_head and the
  fp32 cross-entropy then run on `chunk_tokens` target positions at a time, each chunk under
  torch.utils.checkpoint, so backward recomputes one chunk's logits at a time instead of keeping them all.
  Same value and gradients as plain (up to float summation order). It calls the lm_head *module*, so
  ZeRO-3's parameter-gather hooks fire as in a normal forward. Each call is a collective under ZeRO-3 (the
  shards of lm_head are gathered), so every rank must make the same number of calls: the loop agrees on a
  chunk count per micro-batch (`chunks_needed`, max over ranks) and a rank with fewer target tokens pads with
  empty chunks (two ranks with different counts desynchronise: gloo aborts, NCCL hangs).
- fused: liger-kernel's fused linear cross-entropy (Triton, GPU only; `pip install -e .[gpu]`). It reads
  lm_head.weight directly, which under ZeRO-3 is an empty shard: it is not offered with ZeRO-3.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ded_ray.errors import UserError
from ded_ray.train.packing import MicroBatch
from ded_ray.train.tokenize import IGNORE_INDEX

# `loss: auto` switches from plain to chunked at this many tokens per micro-batch: small micro-batches (tests,
# toy runs) keep the simpler plain loss; from here its T x V buffers (4k x 152k x 12 bytes = 7 GiB) outweigh
# the chunked loss's cost (one more lm_head matmul, in backward).
CHUNKED_FROM_TOKENS = 4096


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def resolve_loss(config) -> str:
    """The loss a `TrainConfig` trains with: plain, chunked or fused (auto decided; see the module docstring).

    auto: fused on GPU when liger-kernel is installed and parameters are not ZeRO-3 shards; else chunked when a
    micro-batch holds >= CHUNKED_FROM_TOKENS tokens; else plain (tiny micro-batches, where it is cheapest).
    """
    zero3 = config.strategy == "deepspeed" and config.zero_stage == 3
    if config.loss == "fused":
        if not config.use_gpu:
            raise UserError("train.loss=fused needs use_gpu=true (liger-kernel is Triton): use train.loss=chunked")
        if zero3:
            raise UserError("train.loss=fused reads lm_head.weight directly, which under ZeRO-3 is an empty shard: "
                            "use train.loss=chunked (same memory bound, gathers through the module)")
        return "fused"
    if config.loss != "auto":
        return config.loss
    if config.use_gpu and not zero3 and liger_available():
        return "fused"
    tokens = config.micro_batch_size * (config.packed_tokens if config.packing else config.max_seq_len)
    return "chunked" if tokens >= CHUNKED_FROM_TOKENS else "plain"


def summed_token_loss(
    model: torch.nn.Module,
    micro: MicroBatch,
    device: torch.device | str,
    loss: str = "plain",
    chunk_tokens: int = 1024,
    causal_lm: torch.nn.Module | None = None,
    num_chunks: int | None = None,
) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropy over the micro-batch's target tokens; 0 when it has none.

    `model` is a causal LM (or a DDP / DeepSpeed wrapper of one): the forward always goes through it, so the
    wrapper's gradient hooks stay armed. `loss` is a resolved kind (plain | chunked | fused); chunked and fused
    need the unwrapped Hugging Face model `causal_lm` (default: `model.module`, else `model`) for its decoder
    and lm_head. `num_chunks`: chunked only, how many lm_head calls to make (>= `chunks_needed`; the same on
    every rank under ZeRO-3); None = as many as this micro-batch needs.
    """
    if loss == "plain":
        return _plain_loss(model, micro, device)
    if loss not in ("chunked", "fused"):
        raise ValueError(f"loss must be plain, chunked or fused, got {loss!r}")
    causal_lm = causal_lm if causal_lm is not None else getattr(model, "module", model)
    hidden = final_hidden_states(model, causal_lm, micro, device)
    targets = micro.targets.to(hidden.device)
    lm_head = causal_lm.get_output_embeddings()
    if loss == "fused":
        return fused_cross_entropy(hidden, targets, lm_head)
    return chunked_cross_entropy(hidden, targets, lm_head, chunk_tokens, num_chunks)


def chunks_needed(num_target_tokens: int, chunk_tokens: int) -> int:
    """lm_head calls the chunked loss makes for a micro-batch with that many target tokens (1 when none)."""
    return max(1, -(-num_target_tokens // chunk_tokens))


def _plain_loss(model, micro: MicroBatch, device) -> torch.Tensor:
    out = model(**micro.model_inputs(device), use_cache=False)
    logits = out.logits
    targets = micro.targets.to(logits.device)
    # Upcast only the rows that carry a target (prompt rows need no fp32 copy). For a long chain of thought
    # that is nearly every row: memory.py counts all of them.
    keep = targets.view(-1) != IGNORE_INDEX
    picked = logits.view(-1, logits.size(-1))[keep].float()
    loss = F.cross_entropy(picked, targets.view(-1)[keep], reduction="sum")
    if not keep.any():
        # Keep the graph connected to every parameter (DDP and ZeRO expect a gradient for each) at zero cost.
        loss = loss + logits.sum() * 0.0
    return loss


def final_hidden_states(model, causal_lm, micro: MicroBatch, device) -> torch.Tensor:
    """[B, L, hidden] output of the decoder's final norm, from a forward through `model` (the wrapper).

    A forward hook on the decoder (`causal_lm.base_model`: `.model` of LlamaForCausalLM / Qwen2ForCausalLM)
    catches its output; `logits_to_keep` as an empty index tensor makes the model's own lm_head run on no
    position, so no full logits are ever built.
    """
    caught: list[torch.Tensor] = []

    def grab(_module, _args, output):
        caught.append(output[0])  # BaseModelOutputWithPast.last_hidden_state (or a tuple's first item)

    handle = causal_lm.base_model.register_forward_hook(grab)
    try:
        model(**micro.model_inputs(device), use_cache=False,
              logits_to_keep=torch.empty(0, dtype=torch.long, device=device))
    finally:
        handle.remove()
    if len(caught) != 1:
        raise RuntimeError(f"expected one decoder output from {type(causal_lm).__name__}, got {len(caught)}")
    return caught[0]


def _chunk_loss(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(lm_head(hidden).float(), targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module,
                          chunk_tokens: int = 1024, num_chunks: int | None = None) -> torch.Tensor:
    """sum over target positions of cross_entropy(lm_head(hidden), target), `chunk_tokens` positions at a time.

    hidden [..., H] and targets [...] (IGNORE_INDEX = no target). Each chunk's logits live only inside its
    checkpointed call: forward keeps just the chunk's inputs, backward recomputes its logits, so at most one
    chunk's logits (and their fp32 copies) exist at any time. `num_chunks` (>= what the targets need) pads
    with calls on one position and no target: they add 0 but gather lm_head like a real chunk (see the module
    docstring). Without targets every call is such a pad, which keeps the graph connected to every parameter
    at no cost (DDP and ZeRO expect a gradient for each).
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    flat_hidden = hidden.reshape(-1, hidden.size(-1))
    flat_targets = targets.reshape(-1)
    keep = flat_targets != IGNORE_INDEX
    rows, row_targets = flat_hidden[keep], flat_targets[keep]
    chunks = [(rows[s:s + chunk_tokens], row_targets[s:s + chunk_tokens])
              for s in range(0, row_targets.numel(), chunk_tokens)]
    wanted = chunks_needed(row_targets.numel(), chunk_tokens) if num_chunks is None else num_chunks
    if wanted < len(chunks):
        raise ValueError(f"num_chunks={wanted} cannot hold {row_targets.numel()} targets at {chunk_tokens} a chunk")
    pad = (flat_hidden[:1], torch.full((1,), IGNORE_INDEX, dtype=flat_targets.dtype, device=flat_targets.device))
    chunks += [pad] * (wanted - len(chunks))
    total = hidden.new_zeros((), dtype=torch.float32)
    for chunk_hidden, chunk_targets in chunks:
        # No randomness inside (no dropout): skip saving/restoring the RNG state per chunk.
        total = total + checkpoint(_chunk_loss, lm_head, chunk_hidden, chunk_targets,
                                   use_reentrant=False, preserve_rng_state=False)
    return total


def fused_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """liger-kernel's fused linear cross-entropy, summed (GPU; not tested on CPU-only machines)."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError as e:
        raise UserError("train.loss=fused needs liger-kernel on the training workers: pip install -e '.[gpu]' "
                        "(or train.loss=chunked)") from e
    picked = _target_rows(hidden, targets)
    if picked is None:
        return lm_head(hidden.reshape(-1, hidden.size(-1))[:1]).sum() * 0.0  # see _target_rows
    hidden, targets = picked
    return liger_fused_linear_cross_entropy(hidden, lm_head.weight, targets, bias=lm_head.bias,
                                            ignore_index=IGNORE_INDEX, reduction="sum")


def _target_rows(hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(hidden rows [K, H], targets [K]) of the positions that carry a target: prompt positions never reach
    lm_head. None when there are none (a filler micro-batch): the caller then returns lm_head(one row) * 0,
    the same zero-cost connection to every parameter as the plain loss (DDP and ZeRO expect a gradient for
    each)."""
    hidden = hidden.reshape(-1, hidden.size(-1))
    targets = targets.reshape(-1)
    keep = targets != IGNORE_INDEX
    if not keep.any():
        return None
    return hidden[keep], targets[keep]
