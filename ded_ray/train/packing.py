"""Micro-batches from tokenised samples: padded, or packed without cross-contamination.

Two ways to put variable-length samples into one forward pass:

- padded: `micro_batch_size` samples per micro-batch, right-padded to the longest; a 2D attention mask hides
  the padding. Simple, but on a long-tailed length mix most of the compute goes to pad tokens.
- packed: samples are binned (first-fit decreasing) into rows of at most `pack_tokens` tokens and
  concatenated into ONE row with no padding at all. Position ids restart at 0 for each sample, and attention
  stays inside each sample:
  * `attention="varlen"` (flash-attention kernels, e.g. transformers' `flash_attention_2` on GPU): no mask is
    passed; transformers derives the per-sample boundaries (cu_seqlens) from the position-id resets and runs
    the varlen kernel, so no FLOPs are spent across samples;
  * `attention="block_mask"` (CPU / sdpa / eager fallback): an explicit 4D block-diagonal causal mask
    (0 = attend, dtype-min = blocked), exact but O(T^2) in memory and compute over the packed row.

Targets are shifted per sample here (target[t] = label[t + 1], the last token of a sample has none), so the
loss never asks the last token of one sample to predict the first token of the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from ded_ray.train.tokenize import IGNORE_INDEX

Attention = Literal["varlen", "block_mask"]


@dataclass(frozen=True)
class Sample:
    input_ids: np.ndarray  # int, shape [n]
    labels: np.ndarray  # int, shape [n]; IGNORE_INDEX where no loss (prompt, template decoration)

    def __len__(self) -> int:
        return int(len(self.input_ids))


@dataclass
class MicroBatch:
    """One forward pass worth of tokens. `targets` are already shifted (next-token ids or IGNORE_INDEX)."""

    input_ids: torch.Tensor  # [B, L] long
    targets: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor | None  # [B, L] padding mask, [B, 1, L, L] additive block mask, or None
    position_ids: torch.Tensor | None  # [B, L] long, or None (= 0..L-1 per row)
    num_samples: int
    num_tokens: int  # real tokens (not padding)

    @property
    def num_slots(self) -> int:
        """Token positions the model computes, padding included."""
        return int(self.input_ids.numel())

    @property
    def num_padding(self) -> int:
        return self.num_slots - self.num_tokens

    @property
    def num_target_tokens(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    def model_inputs(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids.to(device)}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask.to(device)
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids.to(device)
        return inputs


def shifted_targets(labels: np.ndarray) -> np.ndarray:
    """Next-token targets of one sample: target[t] = labels[t + 1]; the last position has none."""
    out = np.full(len(labels), IGNORE_INDEX, dtype=np.int64)
    out[:-1] = labels[1:]
    return out


def plan_micro_batches(
    lengths: Sequence[int], packing: bool, micro_batch_size: int, pack_tokens: int
) -> list[list[int]]:
    """Group sample indices into micro-batches.

    padded: consecutive groups of `micro_batch_size` in the given order (what a plain DataLoader does).
    packed: first-fit decreasing into bins of at most `pack_tokens` tokens; a sample longer than the bin gets
    a bin of its own (the caller keeps samples <= max_seq_len <= pack_tokens, so this does not happen).
    """
    if not packing:
        return [list(range(i, min(i + micro_batch_size, len(lengths)))) for i in range(0, len(lengths), micro_batch_size)]
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(pack_tokens - lengths[i])
    return bins


def collate_padded(samples: Sequence[Sample], pad_token_id: int) -> MicroBatch:
    """Right-padded [B, max_len] batch with a 2D attention mask; pad positions have no target."""
    width = max(len(s) for s in samples)
    ids = np.full((len(samples), width), pad_token_id, dtype=np.int64)
    targets = np.full((len(samples), width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((len(samples), width), dtype=np.int64)
    for row, s in enumerate(samples):
        ids[row, : len(s)] = s.input_ids
        targets[row, : len(s)] = shifted_targets(s.labels)
        mask[row, : len(s)] = 1
    return MicroBatch(
        input_ids=torch.from_numpy(ids),
        targets=torch.from_numpy(targets),
        attention_mask=torch.from_numpy(mask),
        position_ids=None,
        num_samples=len(samples),
        num_tokens=int(sum(len(s) for s in samples)),
    )


def collate_packed(samples: Sequence[Sample], attention: Attention, dtype: torch.dtype = torch.float32) -> MicroBatch:
    """All samples concatenated into one [1, T] row; position ids restart per sample (see module docstring).

    `dtype` is the model's compute dtype: the additive block mask must match it.
    """
    ids = np.concatenate([s.input_ids for s in samples]).astype(np.int64)
    targets = np.concatenate([shifted_targets(s.labels) for s in samples])
    positions = np.concatenate([np.arange(len(s), dtype=np.int64) for s in samples])
    if attention == "block_mask":
        mask = block_causal_mask([len(s) for s in samples], dtype)
    elif attention == "varlen":
        mask = None
    else:
        raise ValueError(f"attention must be 'varlen' or 'block_mask', got {attention!r}")
    return MicroBatch(
        input_ids=torch.from_numpy(ids)[None],
        targets=torch.from_numpy(targets)[None],
        attention_mask=mask,
        position_ids=torch.from_numpy(positions)[None],
        num_samples=len(samples),
        num_tokens=int(len(ids)),
    )


def block_causal_mask(seq_lens: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive [1, 1, T, T] mask: token i attends to token j iff same sample and j <= i (0), else dtype-min.

    Additive float (not boolean) because transformers passes a 4D mask through unchanged to the attention
    function, and the eager path adds it to the scores while sdpa accepts either form.
    """
    segment = torch.repeat_interleave(torch.arange(len(seq_lens)), torch.tensor(list(seq_lens)))
    total = int(segment.numel())
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    allowed = causal & (segment[:, None] == segment[None, :])
    mask = torch.zeros(total, total, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def build_micro_batches(
    samples: Sequence[Sample],
    packing: bool,
    micro_batch_size: int,
    pack_tokens: int,
    pad_token_id: int,
    attention: Attention = "block_mask",
    dtype: torch.dtype = torch.float32,
) -> list[MicroBatch]:
    """One optimizer step's samples (on this worker) as micro-batches, padded or packed."""
    plan = plan_micro_batches([len(s) for s in samples], packing, micro_batch_size, pack_tokens)
    if packing:
        return [collate_packed([samples[i] for i in group], attention, dtype) for group in plan]
    return [collate_padded([samples[i] for i in group], pad_token_id) for group in plan]


def filler_micro_batch(pad_token_id: int) -> MicroBatch:
    """A one-token micro-batch with no target: keeps a worker in lockstep (same number of forward/backward
    passes per step on every rank, which ZeRO-3's parameter gathers need) while adding zero loss/gradient."""
    return MicroBatch(
        input_ids=torch.tensor([[pad_token_id]]),
        targets=torch.tensor([[IGNORE_INDEX]]),
        attention_mask=None,
        position_ids=None,
        num_samples=0,
        num_tokens=0,
    )
