"""`train_loop_per_worker`: what each Ray Train worker runs.

Per optimizer step every worker takes `global_batch_size / num_workers` samples from its Ray Data shard,
turns them into micro-batches (packed or padded), and runs forward/backward on each. Workers agree on the
number of micro-batches per step (the max over ranks; a worker with fewer runs target-free filler passes) so
DDP's and ZeRO's collectives stay in lockstep even when packing gives ranks different counts. The loss is
scaled by the step's target tokens summed over all ranks, so every target token weighs the same
(see loss.py) and the gradient does not depend on how samples were grouped.

Checkpoints hold the backend state (DDP: rank 0's state dicts; DeepSpeed: every rank's shards) plus
`train_state.json` (epoch, step, metric history). A restarted worker group resumes from the latest checkpoint:
it skips the steps of the current epoch already done and continues. At the end rank 0 writes the student
straight to `<output_dir>/student/`, then reports a final checkpoint holding only `train_state.json`
(finished): the weights exist once, and a rerun on the same run sees a finished run.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ded_ray.config import TrainConfig
from ded_ray.train.packing import MicroBatch, Sample, build_micro_batches, filler_micro_batch
from ded_ray.train.tokenize import INPUT_IDS, LABELS

TRAIN_STATE = "train_state.json"
STUDENT_DIR = "student"  # inside output_dir: the Hugging Face folder of the trained student


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done in `epoch`
    global_step: int = 0
    finished: bool = False
    resumed_at: list[int] = field(default_factory=list)  # global steps at which a restart picked up
    history: list[dict[str, Any]] = field(default_factory=list)  # rank 0's per-step metrics

    @classmethod
    def read(cls, folder: Path) -> "TrainState":
        return cls(**json.loads((folder / TRAIN_STATE).read_text()))

    def write(self, folder: Path) -> None:
        (folder / TRAIN_STATE).write_text(json.dumps(asdict(self)))


@dataclass
class LoopSpec:
    """Everything a worker needs; travels as the TorchTrainer's `train_loop_config` (must pickle)."""

    model_path: str
    student_dir: str  # where rank 0 exports the student (local folder or storage URI), replaced whole
    train: dict[str, Any]  # TrainConfig.model_dump()
    total_steps: int  # optimizer steps of the whole run (lr schedule length)
    on_step: Callable[[int, int], None] | None = None  # (rank, global_step) after each step: fault drills
    progress: Any = None  # a ProgressBoard actor handle: rank 0 posts each step's metrics for the driver


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point. Returns the metric history on rank 0 (the trainer's `result.return_value`)."""
    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer

    from ded_ray.train.backends import export_hf_folder, make_backend, resolve_attn_implementation
    from ded_ray.train.loss import resolve_loss

    from ded_ray.models import resolve_model

    spec = LoopSpec(**loop_config)
    # The driver sends a model name (models.model_ref): each worker loads its own node's copy.
    spec.model_path = str(resolve_model(spec.model_path))
    config = TrainConfig(**spec.train)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed)
    if config.torch_threads:  # else torch follows OMP_NUM_THREADS, which Ray sets to the reserved CPUs
        torch.set_num_threads(config.torch_threads)

    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    attn_implementation = resolve_attn_implementation(config)
    attention = "varlen" if "flash" in attn_implementation else "block_mask"
    backend = make_backend(spec.model_path, config, spec.total_steps, device, world)
    loss_kind = resolve_loss(config)  # the driver already resolved `auto` (and planned memory for it)
    # sdpa takes a boolean block mask; eager adds the mask to its scores, so it needs the additive form.
    mask_dtype = torch.bool if attn_implementation == "sdpa" else backend.compute_dtype

    state = TrainState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = TrainState.read(Path(folder))
            if not state.finished:
                backend.load_checkpoint(Path(folder))
                state.resumed_at.append(state.global_step)
    if state.finished:
        return {"history": state.history, "resumed_at": state.resumed_at} if rank == 0 else None

    shard = ray.train.get_dataset_shard("train")
    per_worker = config.global_batch_size // world
    sync = _Collectives(device)
    stop = False
    for epoch in range(state.epoch, config.epochs):
        if epoch != state.epoch:
            state.epoch, state.step_in_epoch = epoch, 0
        batches = _sample_batches(shard, per_worker)
        for _ in range(state.step_in_epoch):  # resumed mid-epoch: these steps are already trained
            next(batches, None)
        while True:
            started = time.perf_counter()
            samples = next(batches, [])
            micro = build_micro_batches(
                samples, config.packing, config.micro_batch_size, config.packed_tokens, pad_id, attention,
                mask_dtype,
            ) if samples else []
            n_micro = sync.max(len(micro))
            if n_micro == 0:
                break  # every rank's shard is exhausted
            metrics = _train_step(backend, micro, n_micro, pad_id, device, sync, loss_kind, config.loss_chunk_tokens)
            state.global_step += 1
            state.step_in_epoch += 1
            elapsed = sync.max_float(time.perf_counter() - started)
            metrics.update(
                step=state.global_step, epoch=epoch, lr=backend.lr(), step_time_s=elapsed,
                tokens_per_s=metrics["tokens"] / elapsed if elapsed > 0 else 0.0,
            )
            stop = config.max_steps is not None and state.global_step >= config.max_steps
            if rank == 0:
                state.history.append(metrics)
                if spec.progress is not None:
                    spec.progress.post.remote(metrics)
            every = config.checkpoint_every_steps
            # none on the run's last step: the final checkpoint follows at once
            last = stop or state.global_step >= spec.total_steps
            if every and state.global_step % every == 0 and not last:
                _report_checkpoint(backend, state, metrics, rank)
            else:
                ray.train.report(metrics)
            if spec.on_step is not None:
                spec.on_step(rank, state.global_step)
            if stop:
                break
        if stop:
            break
        state.epoch, state.step_in_epoch = epoch + 1, 0
        if config.checkpoint_every_steps is None and epoch + 1 < config.epochs:
            _report_checkpoint(backend, state, {"epoch_end": epoch}, rank)

    state.finished = True
    # Export before the final report: once a checkpoint says "finished", the student must already be there.
    export_hf_folder(backend, spec.model_path, spec.student_dir, rank)
    with tempfile.TemporaryDirectory(prefix="ded-final-") as tmp:
        if rank == 0:
            state.write(Path(tmp))
        final = dict(state.history[-1]) if state.history else {}
        final["final"] = True
        ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None,
                         checkpoint_dir_name=f"final_step{state.global_step:06d}")
    return {"history": state.history, "resumed_at": state.resumed_at} if rank == 0 else None


def _train_step(backend, micro: list[MicroBatch], n_micro: int, pad_id: int, device, sync, loss_kind: str = "plain",
                chunk_tokens: int = 1024) -> dict[str, Any]:
    """Forward/backward over this rank's micro-batches (+ fillers up to `n_micro`) and one optimizer step.
    `loss_kind`: plain | chunked | fused (see loss.py)."""
    from ded_ray.train.loss import chunks_needed, summed_token_loss

    local = torch.tensor(
        [sum(m.num_target_tokens for m in micro), sum(m.num_tokens for m in micro),
         sum(m.num_slots for m in micro), sum(m.num_samples for m in micro)],
        dtype=torch.float64,
    )
    targets, tokens, slots, samples = sync.sum(local).tolist()
    world = sync.world_size
    # DDP and ZeRO average gradients over ranks; multiplying by world_size turns that average back into a
    # sum, so the gradient is d(sum of token losses)/d(theta) / (all target tokens of the step).
    scale = world / max(targets, 1.0)
    loss_sum = 0.0
    passes = micro + [filler_micro_batch(pad_id)] * (n_micro - len(micro))
    # The chunked loss's lm_head calls are collectives under ZeRO-3: every rank makes the most any rank needs.
    chunks = (sync.max_each([chunks_needed(mb.num_target_tokens, chunk_tokens) for mb in passes])
              if loss_kind == "chunked" else [None] * len(passes))
    for i, mb in enumerate(passes):
        with backend.accumulate(is_last=i == len(passes) - 1):
            loss = summed_token_loss(backend.model, mb, device, loss_kind, chunk_tokens, backend.unwrapped(),
                                     num_chunks=chunks[i])
            backend.backward(loss * scale)
        loss_sum += float(loss.detach())
    grad_norm = backend.optimizer_step()
    total_loss = sync.sum(torch.tensor([loss_sum], dtype=torch.float64)).item()
    return {
        "loss": total_loss / max(targets, 1.0),
        "grad_norm": grad_norm,
        "samples": int(samples),
        "tokens": int(tokens),
        "target_tokens": int(targets),
        "padding_fraction": (slots - tokens) / slots if slots else 0.0,
        "micro_batches": n_micro,
    }


def _report_checkpoint(backend, state: TrainState, metrics: dict[str, Any], rank: int) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="ded-ckpt-") as tmp:
        folder = Path(tmp)
        backend.save_checkpoint(folder, rank)
        if rank == 0:
            state.write(folder)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"checkpoint_step{state.global_step:06d}")


def _sample_batches(shard, per_worker: int) -> Iterator[list[Sample]]:
    """This rank's samples, `per_worker` at a time (the last batch of an epoch may be smaller)."""
    for batch in shard.iter_batches(batch_size=per_worker, batch_format="numpy", drop_last=False):
        ids, labels = batch[INPUT_IDS], batch[LABELS]
        yield [Sample(np.asarray(ids[i], dtype=np.int64), np.asarray(labels[i], dtype=np.int64)) for i in range(len(ids))]


class _Collectives:
    """Tiny all-reduce helpers over the process group Ray Train set up (identity with one worker)."""

    def __init__(self, device):
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.world_size = self.dist.get_world_size() if self.dist else 1
        # nccl reduces only device tensors; gloo only host tensors.
        self.device = device if self.dist and self.dist.get_backend() == "nccl" else torch.device("cpu")

    def _reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        if self.dist is None:
            return tensor
        t = tensor.to(self.device)
        self.dist.all_reduce(t, op=op)
        return t.cpu()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._reduce(tensor, self.dist.ReduceOp.SUM if self.dist else None)

    def max(self, value: int) -> int:
        return self.max_each([value])[0]

    def max_each(self, values: list[int]) -> list[int]:
        """Element-wise max over ranks of equally long lists."""
        return self._reduce(torch.tensor(values, dtype=torch.int64), self.dist.ReduceOp.MAX if self.dist else None).tolist()

    def max_float(self, value: float) -> float:
        return float(self._reduce(torch.tensor([value], dtype=torch.float64), self.dist.ReduceOp.MAX if self.dist else None).item())
