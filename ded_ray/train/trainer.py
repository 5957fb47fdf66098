"""`train_student`: fine-tune the student on a corpus with Ray Train (DDP or DeepSpeed ZeRO).

```
corpus (parquet / DataFrame / Dataset) ─ Ray Data: tokenize (chat template, assistant-only labels)
   ├─ rejected rows (too_long, no_assistant_turn, ...) → <output_dir>/rejected/train_tokenize/<reason>/
   └─ kept rows → TorchTrainer(datasets={"train": ...}) → each worker reads its own shard
                     → checkpoints under <output_dir>/train/ (resume after a worker failure; the newest
                       `keep_checkpoints` kept, the final one only the training state)
                     → final weights → <output_dir>/student/ (Hugging Face folder, written once by rank 0)
```

The corpus is never copied to every worker: Ray Train splits the tokenised dataset into one streaming shard
per worker. A per-GPU memory plan (states under the chosen ZeRO stage, activations, the loss's logits; see
memory.py) is printed and, on GPU runs, enforced before anything is launched.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ded_ray import schema as S
from ded_ray.cache import cache_dir
from ded_ray.config import TrainConfig
from ded_ray.log import log
from ded_ray.ray_helpers import on_actors
from ded_ray.train.loop import STUDENT_DIR, LoopSpec, train_loop_per_worker
from ded_ray.train.loss import resolve_loss
from ded_ray.train.memory import MemoryEstimate, check_memory, estimate_for_model
from ded_ray.train.tokenize import INPUT_IDS, LABELS, TokenizeStage

RUN_NAME = "train"  # Ray Train's run folder (checkpoints) inside output_dir
METRICS_FILE = "train_metrics.jsonl"


@dataclass
class TrainResult:
    student_dir: str  # Hugging Face folder of the trained student
    history: list[dict[str, Any]]  # one dict per optimizer step: loss, lr, tokens_per_s, padding_fraction, ...
    num_samples: int  # samples trained on per epoch
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> rows not trained on
    unseen_by_split: int = 0  # rows Ray Train's equal split leaves out (< num_workers)
    total_steps: int = 0
    checkpoint_path: str | None = None  # the final checkpoint on storage
    memory: MemoryEstimate | None = None
    resumed_at: list[int] = field(default_factory=list)  # steps at which training resumed from a checkpoint
    elapsed_s: float = 0.0

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


def train_student(
    corpus: Any,
    model: str,
    config: TrainConfig,
    output_dir: str | os.PathLike,
    *,
    run_name: str = RUN_NAME,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` on `corpus`; returns where the student is and the per-step metrics.

    corpus: a parquet file/folder in CORPUS_SCHEMA (a `messages` column), a pandas DataFrame with `messages`,
        or a `ray.data.Dataset`.
    model: a built-in name, local folder or cached HF id (see ded_ray.models.resolve_model).
    output_dir: local folder or storage URI; gets `student/`, `train/` (checkpoints), `rejected/`, metrics.
    on_step: called on every worker after each optimizer step with (rank, global_step): a hook for fault
        drills and tests (it must pickle).
    Re-running with the same output_dir and run_name resumes the Ray Train run from its latest checkpoint.
    """
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.data.expressions import col
    from ray.train.torch import TorchTrainer

    from ded_ray.models import model_ref, resolve_model
    from ded_ray.rundir import RunDir
    from ded_ray.train.progress import ProgressBoard, fit_with_progress

    started = time.perf_counter()
    model_path = str(resolve_model(model))  # here only for the memory plan; workers resolve their own copy
    model_for_workers = model_ref(model)
    out = str(output_dir)
    root, name = out.rstrip("/").rsplit("/", 1) if "/" in out.rstrip("/") else (".", out)
    run = RunDir(root, name)

    # The loss is decided once, here, so the memory plan counts the loss the workers run.
    config = config.model_copy(update={"loss": resolve_loss(config)})
    memory = estimate_for_model(model_path, config)
    log(f"train: {config.strategy}"
        + (f" ZeRO-{config.zero_stage}" if config.strategy == "deepspeed" else "")
        + f" on {config.num_workers} {'GPU' if config.use_gpu else 'CPU'} worker(s), {config.loss} loss\n{memory.table()}")
    log(check_memory(memory, config))  # a plan that does not fit stops here, before any actor or worker starts

    tokenized = on_actors(
        _as_dataset(corpus).map_batches, TokenizeStage, config.tokenize_concurrency,
        fn_constructor_kwargs={"model_path": model_for_workers, "max_seq_len": config.max_seq_len, "truncate": config.truncate},
        batch_format="pandas",
        batch_size=config.tokenize_batch_size,
    ).materialize()
    rejected_rows = tokenized.filter(expr=col(S.REJECT_REASON).is_not_null()).to_pandas()
    rejected = run.write_rejected(TokenizeStage.name, rejected_rows.drop(columns=[INPUT_IDS, LABELS], errors="ignore"))
    if rejected:
        log(f"train: rejected before training: {rejected} (rows under {run.file('rejected', TokenizeStage.name)})")

    train_ds = tokenized.filter(expr=col(S.REJECT_REASON).is_null()).select_columns([INPUT_IDS, LABELS])
    if config.shuffle:
        # Once, with the seed: every epoch then sees the same order, which keeps resume-by-skipping exact.
        train_ds = train_ds.random_shuffle(seed=config.seed)
    train_ds = train_ds.materialize()
    num_samples = train_ds.count()
    if num_samples == 0:
        raise ValueError(f"no usable training samples in the corpus (rejected: {rejected}); "
                         f"see {run.file('rejected', TokenizeStage.name)}")
    world = config.num_workers
    per_worker_rows = num_samples // world
    if per_worker_rows == 0:
        raise ValueError(f"{num_samples} samples cannot feed {world} workers: use train.num_workers <= {num_samples}")
    unseen = num_samples - per_worker_rows * world
    if unseen:
        log(f"train: Ray Train's equal split leaves {unseen} of {num_samples} rows unseen each epoch")
    steps_per_epoch = math.ceil(per_worker_rows / (config.global_batch_size // world))
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    log(f"train: {num_samples} samples, {steps_per_epoch} steps/epoch x {config.epochs} epochs -> {total_steps} steps")

    board = ProgressBoard.remote()
    student_dir = run.file(STUDENT_DIR)
    # rank 0 exports there itself (a URI on storage): the student is written once, not copied out of a checkpoint
    spec = LoopSpec(model_path=model_for_workers, student_dir=f"{run.uri}/{STUDENT_DIR}" if "://" in out else student_dir,
                    train=config.model_dump(), total_steps=total_steps, on_step=on_step, progress=board)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=dict(vars(spec)),  # shallow: asdict would turn an on_step dataclass into a dict
        scaling_config=ray.train.ScalingConfig(
            num_workers=world, use_gpu=config.use_gpu, resources_per_worker=_worker_resources(config)
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=_storage_path(out),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            # Ray Train deletes the older checkpoints once a newer one is registered.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
            worker_runtime_env={"env_vars": worker_env(config)},
        ),
        datasets={"train": train_ds},
        dataset_config=ray.train.DataConfig(execution_options=ExecutionOptions(preserve_order=True)),
    )
    try:
        result = fit_with_progress(trainer, board, total_steps, config.epochs)
    finally:
        ray.kill(board)
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    returned = result.return_value or {}
    history = returned.get("history", [])
    _check_student(result.checkpoint, run, run_name)
    run_metrics = "\n".join(json.dumps(h) for h in history)
    with run.fs.open_output_stream(run.file(METRICS_FILE)) as f:
        f.write(run_metrics.encode())
    elapsed = time.perf_counter() - started
    if history:
        log(f"train: {len(history)} steps in {elapsed:.0f} s, final loss {history[-1]['loss']:.4f}; student at {student_dir}")
    return TrainResult(
        student_dir=student_dir, history=history, num_samples=num_samples, rejected=rejected,
        unseen_by_split=unseen, total_steps=total_steps,
        checkpoint_path=result.checkpoint.path if result.checkpoint else None, memory=memory, resumed_at=returned.get("resumed_at", []), elapsed_s=elapsed,
    )


def worker_env(config: TrainConfig) -> dict[str, str]:
    """Environment of the training workers: DeepSpeed's CPU accelerator off-GPU, compiled ops cached."""
    env = {
        # DeepSpeed JIT-compiles ops (shm comm, CPU Adam) on first use: compile once into the project cache.
        "TORCH_EXTENSIONS_DIR": str(cache_dir("torch_extensions")),
        "DED_CACHE_DIR": str(cache_dir()),
        "TOKENIZERS_PARALLELISM": "false",
    }
    if not config.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def _worker_resources(config: TrainConfig) -> dict[str, float]:
    resources = {"CPU": config.num_cpus_per_worker}
    if config.use_gpu:
        resources["GPU"] = 1
    return resources


def _storage_path(out: str) -> str:
    return out if "://" in out else str(Path(out).expanduser().resolve())


def _as_dataset(corpus: Any):
    import ray.data

    if isinstance(corpus, ray.data.Dataset):
        return corpus
    if isinstance(corpus, pd.DataFrame):
        if S.MESSAGES not in corpus.columns:
            raise ValueError(f"the corpus DataFrame needs a {S.MESSAGES!r} column; it has {list(corpus.columns)}")
        return ray.data.from_pandas(corpus)
    if isinstance(corpus, (str, os.PathLike)):
        path = str(corpus)
        if "://" not in path and not Path(path).exists():
            raise FileNotFoundError(f"corpus {path} does not exist: give the corpus.parquet written by `ded curate`")
        return ray.data.read_parquet(path)
    raise TypeError(f"corpus must be a parquet path, a pandas DataFrame or a ray.data.Dataset, got {type(corpus).__name__}")


def _check_student(checkpoint, run, run_name: str) -> None:
    """The workers wrote <output_dir>/student before reporting the final checkpoint: make sure it is there."""
    if checkpoint is None:
        raise RuntimeError("training finished without a final checkpoint: the student may be incomplete")
    if not run.exists(STUDENT_DIR, "config.json"):
        # e.g. a rerun of a finished run whose student/ was deleted: Ray Train resumes as finished.
        raise RuntimeError(f"training is finished ({checkpoint.path}) but {run.file(STUDENT_DIR)} has no "
                           f"config.json: delete {run.file(run_name)} to train again")
