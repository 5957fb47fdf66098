"""Micro-batches from tokenised samples: padded, or packed without cross-contamination.

Two ways to put variable-length samples into one forward pass:

- padded: `micro_batch_size` samples per micro-batch, right-padded to the longest; a 2D attention mask hides
  the padding. Simple, but on a long-tailed length mix most of the compute goes to pad tokens.
- packed: samples are binned (first-fit decreasing) into rows of at most `pack_tokens` tokens (default
  max_seq_len), `micro_batch_size` rows per micro-batch. Position ids restart at 0 for each sample, and
  attention stays inside each sample:
  * `attention="varlen"` (flash-attention kernels, e.g. transformers' `flash_attention_2` on GPU): all rows
    are concatenated into ONE row with no padding at all and no mask; transformers derives the per-sample
    boundaries (cu_seqlens) from the position-id resets and runs the varlen kernel, so no FLOPs are spent
    across samples. The forward must run with use_cache=False (as training does): with a KV cache,
    transformers does not look for packed position ids;
  * `attention="block_mask"` (CPU / sdpa / eager fallback): rows stay rows ([B, L], a little padding at the
    end of the shorter rows) with an explicit 4D block-diagonal causal mask per row. Exact, and since rows
    are at most `pack_tokens` long the mask's O(L^2) cost stays that of one sample of max length.

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
    attention_mask: torch.Tensor | None  # [B, L] padding mask, [B, 1, L, L] block mask (bool or additive), or None
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


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sample indices binned into rows of at most `capacity` tokens. A sample longer
    than the capacity gets a row of its own (the trainer keeps samples <= max_seq_len <= capacity)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def plan_micro_batches(
    lengths: Sequence[int], packing: bool, micro_batch_size: int, pack_tokens: int
) -> list[list[list[int]]]:
    """Micro-batches -> rows -> sample indices.

    padded: one sample per row, `micro_batch_size` consecutive samples per micro-batch (what a DataLoader does).
    packed: `pack_rows(lengths, pack_tokens)`, `micro_batch_size` rows per micro-batch.
    """
    rows = pack_rows(lengths, pack_tokens) if packing else [[i] for i in range(len(lengths))]
    return [rows[i : i + micro_batch_size] for i in range(0, len(rows), micro_batch_size)]


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


def collate_packed(
    rows: Sequence[Sequence[Sample]], attention: Attention, mask_dtype: torch.dtype = torch.bool, pad_token_id: int = 0
) -> MicroBatch:
    """Packed rows; position ids restart per sample (see the module docstring for the two attention paths).

    `mask_dtype` (block_mask only): torch.bool (True = attend; sdpa) or the model's float dtype (additive,
    0 / dtype-min; what transformers' eager attention adds to its scores).
    """
    if attention == "varlen":
        flat = [s for row in rows for s in row]
        ids = np.concatenate([s.input_ids for s in flat]).astype(np.int64)
        return MicroBatch(
            input_ids=torch.from_numpy(ids)[None],
            targets=torch.from_numpy(np.concatenate([shifted_targets(s.labels) for s in flat]))[None],
            attention_mask=None,
            position_ids=torch.from_numpy(np.concatenate([np.arange(len(s), dtype=np.int64) for s in flat]))[None],
            num_samples=len(flat),
            num_tokens=int(len(ids)),
        )
    if attention != "block_mask":
        raise ValueError(f"attention must be 'varlen' or 'block_mask', got {attention!r}")
    width = max(sum(len(s) for s in row) for row in rows)
    ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    targets = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    # Segment id per position: one per sample; every pad position is its own segment (it attends only to
    # itself, so no softmax row is empty, and it has no target, so it adds nothing to the loss).
    segments = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        at = 0
        for k, s in enumerate(row):
            ids[r, at : at + len(s)] = s.input_ids
            targets[r, at : at + len(s)] = shifted_targets(s.labels)
            positions[r, at : at + len(s)] = np.arange(len(s))
            segments[r, at : at + len(s)] = k
            at += len(s)
        segments[r, at:] = len(row) + np.arange(width - at)
    return MicroBatch(
        input_ids=torch.from_numpy(ids),
        targets=torch.from_numpy(targets),
        attention_mask=block_causal_mask(torch.from_numpy(segments), mask_dtype),
        position_ids=torch.from_numpy(positions),
        num_samples=sum(len(row) for row in rows),
        num_tokens=int(sum(len(s) for row in rows for s in row)),
    )


def block_causal_mask(segments: torch.Tensor, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """[B, 1, L, L] mask from per-position segment ids [B, L]: i attends to j iff same segment and j <= i.

    Boolean (True = attend) or additive float (0 = attend, dtype-min = blocked): transformers passes a 4D
    mask through unchanged to the attention function, so it must be in that function's convention.
    """
    length = segments.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = causal & (segments[:, :, None] == segments[:, None, :])
    if dtype == torch.bool:
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def build_micro_batches(
    samples: Sequence[Sample],
    packing: bool,
    micro_batch_size: int,
    pack_tokens: int,
    pad_token_id: int,
    attention: Attention = "block_mask",
    mask_dtype: torch.dtype = torch.bool,
) -> list[MicroBatch]:
    """One optimizer step's samples (on this worker) as micro-batches, padded or packed."""
    plan = plan_micro_batches([len(s) for s in samples], packing, micro_batch_size, pack_tokens)
    if packing:
        return [collate_packed([[samples[i] for i in row] for row in mb], attention, mask_dtype, pad_token_id)
                for mb in plan]
    return [collate_padded([samples[row[0]] for row in mb], pad_token_id) for mb in plan]


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
