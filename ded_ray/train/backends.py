"""DDP and DeepSpeed behind one small interface used by the training loop.

A step is: for each micro-batch `with backend.accumulate(is_last): loss = f(backend.model); backend.backward(loss)`,
then `backend.optimizer_step()`. The backend owns gradient synchronisation (DDP: only on the last micro-batch;
DeepSpeed: the accumulation boundary), clipping, the optimizer and the lr schedule, checkpoints of all of
that, and the export of the final weights as a Hugging Face folder (gathering ZeRO-3 shards).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ded_ray.config import TrainConfig
from ded_ray.train.optim import build_optimizer, build_scheduler


def resolve_attn_implementation(config: TrainConfig) -> str:
    """flash_attention_2 on GPU when installed (packing then runs padding-free varlen kernels), else sdpa."""
    if config.attn_implementation != "auto":
        return config.attn_implementation
    if config.use_gpu and torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return "sdpa"
        return "flash_attention_2"
    return "sdpa"


def _load_model(model_path: str, config: TrainConfig, attn: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation=attn, dtype=dtype)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing works with ZeRO-3's parameter hooks and with DDP.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


class Backend:
    model: torch.nn.Module  # what the loop calls forward on
    compute_dtype: torch.dtype

    def accumulate(self, is_last: bool):
        raise NotImplementedError

    def backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def optimizer_step(self) -> float | None:
        """Clip, step, advance the schedule, zero the grads; returns the gradient norm before clipping."""
        raise NotImplementedError

    def lr(self) -> float:
        raise NotImplementedError

    def save_checkpoint(self, folder: Path, rank: int) -> None:
        raise NotImplementedError

    def load_checkpoint(self, folder: Path) -> None:
        raise NotImplementedError

    def full_state_dict(self) -> dict | None:
        """The whole model's weights on CPU on rank 0 (None elsewhere). Collective: every rank must call it."""
        raise NotImplementedError

    def unwrapped(self) -> torch.nn.Module:
        raise NotImplementedError


class DDPBackend(Backend):
    """torch DistributedDataParallel (gloo on CPU, nccl on GPU); bf16 through autocast over fp32 weights."""

    def __init__(self, model_path: str, config: TrainConfig, total_steps: int, device: torch.device, world_size: int):
        self.config = config
        self.device = device
        base = _load_model(model_path, config, resolve_attn_implementation(config), torch.float32).to(device)
        self._base = base
        self.model = base
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(base, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = build_optimizer(base, config)
        self.scheduler = build_scheduler(self.optimizer, config, total_steps)
        self.compute_dtype = torch.bfloat16 if config.bf16 else torch.float32

    @contextlib.contextmanager
    def accumulate(self, is_last: bool):
        sync = contextlib.nullcontext() if is_last or self.model is self._base else self.model.no_sync()
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)
        with sync, autocast:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self) -> float | None:
        norm = torch.nn.utils.clip_grad_norm_(self._base.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_checkpoint(self, folder: Path, rank: int) -> None:
        if rank != 0:  # every rank holds the same replica
            return
        torch.save(
            {"model": self._base.state_dict(), "optimizer": self.optimizer.state_dict(),
             "scheduler": self.scheduler.state_dict()},
            folder / "ddp_state.pt",
        )

    def load_checkpoint(self, folder: Path) -> None:
        state = torch.load(folder / "ddp_state.pt", map_location=self.device, weights_only=True)
        self._base.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def full_state_dict(self) -> dict | None:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        return _converted(self._base.state_dict(), device="cpu") if rank == 0 else None

    def unwrapped(self) -> torch.nn.Module:
        return self._base


class DeepSpeedBackend(Backend):
    """DeepSpeed engine with the ZeRO stage of the config. Needs DS_ACCELERATOR=cpu on CPU (set by the trainer)."""

    CHECKPOINT_TAG = "deepspeed"

    def __init__(self, model_path: str, config: TrainConfig, total_steps: int, device: torch.device, world_size: int):
        import deepspeed

        from ded_ray.train.deepspeed_config import deepspeed_config

        # Join the process group Ray Train already set up, before any DeepSpeed config reads the world size.
        deepspeed.init_distributed(dist_backend="nccl" if config.use_gpu else "gloo")
        self.config = config
        self.ds_config = deepspeed_config(config)
        self._hf_ds_config = None
        if config.zero_stage == 3:
            # Kept alive on purpose: while it exists, from_pretrained builds the model under zero.Init, so each
            # rank only ever materialises its own shard (a 32B model never sits whole on one GPU).
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds_config = HfDeepSpeedConfig(self.ds_config)
        dtype = torch.bfloat16 if config.bf16 else torch.float32
        model = _load_model(model_path, config, resolve_attn_implementation(config), dtype)
        optimizer = build_optimizer(model, config)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=lambda opt: build_scheduler(opt, config, total_steps),
            config=self.ds_config,
        )
        self.model = self.engine
        self.compute_dtype = dtype

    @contextlib.contextmanager
    def accumulate(self, is_last: bool):
        # Must be set before forward/backward: ZeRO reduces gradients at the boundary only.
        self.engine.set_gradient_accumulation_boundary(is_last)
        yield

    def backward(self, loss: torch.Tensor) -> None:
        # The loop already divides by the step's global target tokens: no extra 1/accumulation_steps.
        self.engine.backward(loss, scale_wrt_gas=False)
        if not self.engine.is_gradient_accumulation_boundary():
            self.engine.step()  # DeepSpeed wants step() after every backward; off the boundary it only counts

    def optimizer_step(self) -> float | None:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save_checkpoint(self, folder: Path, rank: int) -> None:
        # Every rank writes its own shard files; Ray Train merges the ranks' folders into one checkpoint.
        self.engine.save_checkpoint(str(folder), tag=self.CHECKPOINT_TAG, save_latest=False)

    def load_checkpoint(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(folder), tag=self.CHECKPOINT_TAG)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {folder} (tag {self.CHECKPOINT_TAG!r})")

    def full_state_dict(self) -> dict | None:
        if self.config.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()  # gathers one layer at a time to rank 0
        rank = self.engine.global_rank
        return _converted(self.engine.module.state_dict(), device="cpu") if rank == 0 else None

    def unwrapped(self) -> torch.nn.Module:
        return self.engine.module


def make_backend(model_path: str, config: TrainConfig, total_steps: int, device: torch.device, world_size: int) -> Backend:
    if config.strategy == "deepspeed":
        return DeepSpeedBackend(model_path, config, total_steps, device, world_size)
    return DDPBackend(model_path, config, total_steps, device, world_size)


def export_hf_folder(backend: Backend, model_path: str, target: str, rank: int) -> None:
    """Write the trained model to `target` (a local folder or a storage URI, replaced whole) as a Hugging Face
    folder (safetensors + tokenizer + chat template + generation config) that transformers and vLLM load
    directly. Collective (ZeRO-3 gathers); rank 0 writes.

    The weights are saved in the dtype they trained in, or `train.export_dtype` (see config.py for why a
    bf16 base trained over fp32 master weights is not narrowed back by default).
    """
    state = backend.full_state_dict()
    if rank != 0:
        return
    trained = next(t.dtype for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
    wanted = backend.config.export_dtype
    dtype = trained if wanted == "trained" else getattr(torch, wanted)
    if dtype != trained:
        state = _converted(state, dtype=dtype)
    if "://" in target:  # storage: write a local folder, then upload it
        import pyarrow.fs as pafs

        with tempfile.TemporaryDirectory(prefix="ded-student-") as tmp:
            _write_hf_folder(backend.unwrapped(), state, dtype, model_path, Path(tmp))
            fs, path = pafs.FileSystem.from_uri(target)
            fs.delete_dir_contents(path, missing_dir_ok=True)
            pafs.copy_files(tmp, target)
        return
    # Beside the target, then renamed: a half-written folder is never taken for the student.
    final = Path(target)
    staging = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    _write_hf_folder(backend.unwrapped(), state, dtype, model_path, staging)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    os.sync()


def _write_hf_folder(model: torch.nn.Module, state: dict, dtype: torch.dtype, model_path: str, out_dir: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True  # training turned the KV cache off; generation wants it
    model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    # save_pretrained records the module's dtype (fp32 master weights under DDP); record the saved one, which
    # `dtype="auto"` (transformers, vLLM) then loads.
    model.config.dtype = str(dtype).removeprefix("torch.")
    model.config.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(out_dir)
    try:
        GenerationConfig.from_pretrained(model_path).save_pretrained(out_dir)
    except OSError:
        pass  # the base model had no generation_config.json; transformers derives one from config.json


def _converted(state: dict, device: str | None = None, dtype: torch.dtype | None = None) -> dict:
    """`state`'s tensors moved/cast (floating ones only for `dtype`), detached. Tensors that shared storage
    (tied embeddings) still do, so save_pretrained sees the tie and stores the weight once."""
    done: dict = {}
    out = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            out[name] = t
            continue
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if key not in done:
            done[key] = t.detach().to(device=device, dtype=dtype if dtype and t.is_floating_point() else None)
        out[name] = done[key]
    return out
