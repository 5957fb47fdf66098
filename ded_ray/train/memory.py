"""Per-GPU memory plan of full fine-tuning under ZeRO 0-3, checked before any training worker starts.

Model states follow the ZeRO paper's accounting for mixed-precision Adam (Rajbhandari et al. 2020), with
Psi parameters and N data-parallel ranks:

- parameters: 2 bytes each in bf16 (4 in fp32);
- gradients: same width as the parameters;
- optimizer: Adam's two moments in fp32 (8 bytes) plus, in bf16 training, an fp32 master copy (4 bytes):
  K = 12 bytes in bf16, 8 in fp32.

ZeRO-1 partitions the optimizer over N ranks, ZeRO-2 also the gradients, ZeRO-3 also the parameters.
Offloading moves the optimizer (and with ZeRO-3 optionally the parameters) to host memory: they count under
`cpu_bytes` instead. On top of the states, per micro-batch (T tokens, vocabulary V):

- activations: what the decoder layers keep for backward (rough: kernels and allocator slack vary);
- loss: the logits. The plain loss keeps three T x V fp32-sized buffers at its peak (the logits and their
  target-row copy + fp32 upcast in forward, then the fp32 log-probs, their gradient and the softmax
  gradient in backward): 12 bytes per position and vocabulary entry, measured on CPU (12.1). The chunked
  loss has the same peak for one chunk of `loss_chunk_tokens` positions; liger's fused loss about T x H;
- attention: the block-diagonal mask of packed rows (T^2 per row) without flash-attention, and eager
  attention's T^2 scores per head;
- buffers: ZeRO's reduce bucket and, under ZeRO-3, the widest module gathered whole with its unreduced
  gradient (the vocab x hidden lm_head of a large-vocabulary model).

`check_memory` compares the total with `train.gpu_memory_gib` and, when it does not fit, names the cheapest
config changes that would make it fit (each re-planned with the same arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ded_ray.errors import UserError

GiB = 1024**3
PLAIN_LOSS_BYTES_PER_LOGIT = 12  # three fp32-sized T x V buffers at the peak (see the module docstring)
REDUCE_BUCKET_ELEMENTS = int(5e8)  # deepspeed_config.py's reduce_bucket_size


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a decoder-only model's config."""

    num_params: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int
    num_heads: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, num_params: int, cfg: dict) -> ModelShape | None:
        keys = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_attention_heads")
        if not all(cfg.get(k) for k in keys):
            return None
        return cls(num_params, cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"],
                   cfg["vocab_size"], cfg["num_attention_heads"], bool(cfg.get("tie_word_embeddings", False)))

    @property
    def widest_module_params(self) -> int:
        """Parameters of the largest single module: the embedding/lm_head or one decoder layer."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        per_layer = max(0, self.num_params - embeddings) // max(1, self.num_layers)
        return max(self.vocab_size * self.hidden_size, per_layer)


@dataclass(frozen=True)
class MemoryEstimate:
    num_params: int
    zero_stage: int
    num_gpus: int
    params_bytes: float  # per GPU
    grads_bytes: float  # per GPU
    optimizer_bytes: float  # per GPU
    activation_bytes: float | None = None  # per GPU, rough; None when the model shape was not given
    cpu_bytes: float = 0.0  # host memory per GPU taken by offloaded states
    notes: list[str] = field(default_factory=list)
    loss: str | None = None  # plain | chunked | fused: the loss the plan counts
    loss_bytes: float = 0.0  # per GPU, that loss's logits at their peak
    attention_bytes: float = 0.0  # per GPU, T^2 terms: block mask (no flash-attention), eager scores
    buffers_bytes: float = 0.0  # per GPU, ZeRO buckets and ZeRO-3's gathered widest module
    tokens: int = 0  # per micro-batch
    shape: ModelShape | None = None
    attention: str | None = None  # flash | sdpa | eager: what the plan assumed

    @property
    def model_states_bytes(self) -> float:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> float:
        return (self.model_states_bytes + (self.activation_bytes or 0.0) + self.loss_bytes + self.attention_bytes
                + self.buffers_bytes)

    def table(self) -> str:
        """Human-readable summary, one line per item, GiB per GPU."""
        rows = [
            f"memory estimate per device: {_count(self.num_params)} params, ZeRO-{self.zero_stage}, {self.num_gpus} device(s)",
            f"  parameters  {self.params_bytes / GiB:9.2f} GiB",
            f"  gradients   {self.grads_bytes / GiB:9.2f} GiB",
            f"  optimizer   {self.optimizer_bytes / GiB:9.2f} GiB",
            f"  = states    {self.model_states_bytes / GiB:9.2f} GiB",
        ]
        if self.activation_bytes is not None:
            rows.append(f"  activations {self.activation_bytes / GiB:9.2f} GiB (rough)")
            if self.loss:
                rows.append(f"  loss        {self.loss_bytes / GiB:9.2f} GiB ({self.loss} loss, logits at their peak)")
            if self.attention_bytes:
                rows.append(f"  attention   {self.attention_bytes / GiB:9.2f} GiB (T^2 mask/scores: no flash-attention)")
            if self.buffers_bytes:
                rows.append(f"  buffers     {self.buffers_bytes / GiB:9.2f} GiB (ZeRO buckets, gathered widest module)")
            rows.append(f"  = total     {self.total_bytes / GiB:9.2f} GiB")
        if self.cpu_bytes:
            rows.append(f"  offloaded to host: {self.cpu_bytes / GiB:.2f} GiB per GPU")
        rows += [f"  note: {n}" for n in self.notes]
        return "\n".join(rows)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def estimate_memory(
    num_params: int,
    zero_stage: int,
    num_gpus: int,
    bf16: bool = True,
    offload_optimizer: bool = False,
    offload_params: bool = False,
) -> MemoryEstimate:
    """Model-state bytes per GPU (see the module docstring for the accounting)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be >= 1, got {num_gpus}")
    if offload_params and zero_stage != 3:
        raise ValueError("offload_params needs ZeRO-3 (only ZeRO-3 partitions the parameters)")
    width = 2 if bf16 else 4
    k = 12 if bf16 else 8
    n = num_gpus
    params = num_params * width / (n if zero_stage >= 3 else 1)
    grads = num_params * width / (n if zero_stage >= 2 else 1)
    optimizer = num_params * k / (n if zero_stage >= 1 else 1)
    cpu = 0.0
    if offload_optimizer:
        cpu, optimizer = cpu + optimizer, 0.0
    if offload_params:
        cpu, params = cpu + params, 0.0
    return MemoryEstimate(num_params, zero_stage, n, params, grads, optimizer, cpu_bytes=cpu)


def estimate_activations(
    tokens_per_micro_batch: int,
    hidden_size: int,
    num_layers: int,
    intermediate_size: int,
    bf16: bool = True,
    gradient_checkpointing: bool = False,
) -> float:
    """Rough bytes the decoder layers keep for backward over one micro-batch (the loss is counted apart).

    Per token and layer a decoder block keeps about 10 hidden-sized and 3 intermediate-sized tensors for
    backward; with checkpointing only each layer's input is kept and one layer is recomputed at a time.
    """
    b = 2 if bf16 else 4
    t = tokens_per_micro_batch
    per_layer = t * (10 * hidden_size + 3 * intermediate_size) * b
    return float(num_layers * t * hidden_size * b + per_layer if gradient_checkpointing else num_layers * per_layer)


def estimate_loss(loss: str, tokens: int, hidden_size: int, vocab_size: int, bf16: bool = True,
                  chunk_tokens: int = 1024) -> float:
    """Peak bytes of the loss over one micro-batch in which every position carries a target (a long chain
    of thought is nearly all target). See loss.py for the three kinds."""
    b = 2 if bf16 else 4
    if loss == "plain":
        return float(PLAIN_LOSS_BYTES_PER_LOGIT * tokens * vocab_size)
    rows = 2 * tokens * hidden_size * b  # the target rows' hidden states, copied, and their gradient
    if loss == "chunked":
        return float(PLAIN_LOSS_BYTES_PER_LOGIT * min(chunk_tokens, tokens) * vocab_size + rows)
    if loss == "fused":
        # liger sizes its chunk so a chunk's logits are about T x H elements (their gradient is written in
        # place) and keeps grad_input (T x H) from forward to backward. Its lm_head gradient is the one every
        # loss produces (a model state, or ZeRO-3's unreduced gradient under buffers).
        return float(2 * tokens * hidden_size * b + rows)
    raise ValueError(f"loss must be plain, chunked or fused, got {loss!r}")


def estimate_attention(attention: str, rows: int, row_tokens: int, num_heads: int, num_layers: int,
                       bf16: bool = True, gradient_checkpointing: bool = False) -> float:
    """T^2 bytes of one micro-batch: none with flash-attention (varlen); sdpa's boolean [rows, 1, L, L] mask
    plus the additive copy the kernel makes of it; eager's softmax probabilities per head (kept per layer
    without checkpointing) on top of its additive mask."""
    b = 2 if bf16 else 4
    square = rows * row_tokens**2
    if attention == "flash":
        return 0.0
    if attention == "sdpa":
        return float(square * (1 + b))
    if attention == "eager":
        kept_layers = 1 if gradient_checkpointing else num_layers
        return float(square * b + square * num_heads * (b * kept_layers + 4))  # + fp32 softmax of one layer
    raise ValueError(f"attention must be flash, sdpa or eager, got {attention!r}")


def estimate_buffers(shape: ModelShape, zero_stage: int, bf16: bool = True) -> float:
    """ZeRO's reduce bucket (stage >= 2) and, under ZeRO-3, the widest module gathered whole plus its full
    gradient before the reduce-scatter."""
    b = 2 if bf16 else 4
    out = REDUCE_BUCKET_ELEMENTS * b if zero_stage >= 2 else 0
    if zero_stage == 3:
        out += 2 * shape.widest_module_params * b
    return float(out)


def plan_memory(shape: ModelShape, config, loss: str, attention: str = "sdpa",
                num_gpus: int | None = None) -> MemoryEstimate:
    """The whole per-GPU plan of `shape` under a `TrainConfig` (ZeRO stage 0 for DDP), pure arithmetic."""
    n = num_gpus or config.num_workers
    stage = config.zero_stage if config.strategy == "deepspeed" else 0
    offload = config.strategy == "deepspeed" and config.use_gpu
    est = estimate_memory(shape.num_params, stage, n, config.bf16, config.offload_optimizer and offload,
                          config.offload_params and offload and stage == 3)
    row_tokens = config.packed_tokens if config.packing else config.max_seq_len
    tokens = config.micro_batch_size * row_tokens
    acts = estimate_activations(tokens, shape.hidden_size, shape.num_layers, shape.intermediate_size, config.bf16,
                                config.gradient_checkpointing)
    rows = 1 if attention == "flash" else config.micro_batch_size  # varlen: all rows are one unpadded row
    notes = [f"{tokens} tokens per micro-batch, every position a target (the worst case of a long chain of thought)"]
    if config.strategy == "ddp":
        notes.append("DDP replicates all states on every GPU (ZeRO-0); deepspeed + zero_stage 3 partitions them")
    return replace(
        est, activation_bytes=acts, notes=notes, loss=loss, tokens=tokens, shape=shape, attention=attention,
        loss_bytes=estimate_loss(loss, tokens, shape.hidden_size, shape.vocab_size, config.bf16,
                                 config.loss_chunk_tokens),
        attention_bytes=estimate_attention(attention, rows, row_tokens, shape.num_heads, shape.num_layers,
                                           config.bf16, config.gradient_checkpointing),
        buffers_bytes=estimate_buffers(shape, stage, config.bf16),
    )


def count_parameters(model_path: str) -> tuple[int, dict]:
    """(parameter count, model config dict) without loading weights: the model is built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()), config.to_dict()


def planned_attention(config) -> str:
    """The attention the workers will run, as the plan sees it from the driver: flash only when it is asked
    for, or `auto` on GPU with flash-attn importable here (the workers run the same image); else the sdpa
    block mask (the cautious guess)."""
    import importlib.util

    if config.attn_implementation == "flash_attention_2":
        return "flash"
    if config.attn_implementation == "eager":
        return "eager"
    if config.attn_implementation == "auto" and config.use_gpu and importlib.util.find_spec("flash_attn"):
        return "flash"
    return "sdpa"


def estimate_for_model(model_path: str, config, num_gpus: int | None = None, loss: str | None = None) -> MemoryEstimate:
    """The plan for a model folder under a `TrainConfig`; `loss` defaults to what the config resolves to.
    Without a recognisable decoder shape in config.json, only the model states are estimated."""
    from ded_ray.train.loss import resolve_loss

    num_params, cfg = count_parameters(model_path)
    shape = ModelShape.from_config(num_params, cfg)
    if shape is None:
        stage = config.zero_stage if config.strategy == "deepspeed" else 0
        offload = config.strategy == "deepspeed" and config.use_gpu
        return estimate_memory(num_params, stage, num_gpus or config.num_workers, config.bf16,
                               config.offload_optimizer and offload, config.offload_params and offload and stage == 3)
    return plan_memory(shape, config, loss or resolve_loss(config), planned_attention(config), num_gpus)


def _fits(est: MemoryEstimate, usable: float) -> bool:
    return est.total_bytes <= usable


def memory_fixes(est: MemoryEstimate, config) -> list[str]:
    """Config changes that bring the plan under `config.gpu_memory_gib`, cheapest first, each re-planned alone
    ("-> X GiB per GPU"); when none is enough alone, all of them together; and the GPUs it would take."""
    shape, attention = est.shape, est.attention or "sdpa"
    if shape is None:
        return []
    usable = config.gpu_memory_gib * GiB
    deepspeed = config.strategy == "deepspeed"
    zero3 = deepspeed and config.zero_stage == 3
    candidates: list[tuple[str, dict, str]] = []  # (key=value, config updates, what it costs)
    if est.loss == "plain":  # chunked last: it is what "all of the above" keeps (no extra install)
        if not zero3:
            candidates.append(("train.loss=fused", {"loss": "fused"}, "liger-kernel on the workers: pip install -e '.[gpu]'"))
        candidates.append(("train.loss=chunked", {"loss": "chunked"}, "same loss and gradients"))
    if est.attention_bytes:
        candidates.append(("train.attn_implementation=flash_attention_2", {"attn_implementation": "flash_attention_2"},
                           "flash-attn on the workers: pip install -e '.[gpu]'"))
    if not config.gradient_checkpointing:
        candidates.append(("train.gradient_checkpointing=true", {"gradient_checkpointing": True}, "about 1/3 more compute"))
    if deepspeed and config.zero_stage >= 2 and not config.offload_optimizer:
        candidates.append(("train.offload_optimizer=true", {"offload_optimizer": True},
                           f"Adam steps on the host CPU, {est.optimizer_bytes / GiB:.1f} GiB of host RAM per GPU"))
    if config.micro_batch_size > 1:
        candidates.append(("train.micro_batch_size=1", {"micro_batch_size": 1}, "more accumulation passes, same loss"))
    if not zero3:
        candidates.append(("train.strategy=deepspeed train.zero_stage=3", {"strategy": "deepspeed", "zero_stage": 3},
                           "parameters, gradients and optimizer sharded over the GPUs"))

    def replan(updates: dict, num_gpus: int | None = None) -> MemoryEstimate:
        attn = "flash" if "attn_implementation" in updates else attention
        return plan_memory(shape, config.model_copy(update=updates), updates.get("loss", est.loss or "plain"), attn,
                           num_gpus)

    lines, combined, any_fits = [], {}, False
    for key, updates, cost in candidates:
        alone = replan(updates)
        any_fits |= _fits(alone, usable)
        lines.append(f"{key}  -> {alone.total_bytes / GiB:.1f} GiB, "
                     f"{'fits' if _fits(alone, usable) else 'not enough alone'} ({cost})")
        combined.update(updates)
    tries = [({}, "as configured")]
    if len(candidates) > 1 and not any_fits:
        together = replan(combined)
        lines.append(f"all of the above together  -> {together.total_bytes / GiB:.1f} GiB, "
                     f"{'fits' if _fits(together, usable) else 'not enough'}")
        if not _fits(together, usable):
            tries.append((combined, "with all of the above"))
    # More GPUs: the fewest that divide global_batch_size (every rank takes an equal share of a step).
    more = [n for n in range(config.num_workers + 1, config.global_batch_size + 1) if config.global_batch_size % n == 0]
    for updates, how in tries:
        n = next((n for n in more if _fits(replan(updates, n), usable)), None)
        if n is not None:
            lines.append(f"train.num_workers={n}  -> {replan(updates, n).total_bytes / GiB:.1f} GiB, fits "
                         f"(more GPUs, {how})")
            break
    return lines


def check_memory(est: MemoryEstimate, config) -> str:
    """Enforce the plan before any worker starts. Returns the line to log; raises UserError when the plan
    does not fit `train.gpu_memory_gib` and `train.memory_check` is `error`.

    Skipped on CPU runs (use_gpu false): host memory is shared with everything else on the machine and the
    workers' states are not partitioned over devices, so the per-GPU budget does not apply."""
    if not config.use_gpu:
        return "train: memory check skipped: CPU run (train.use_gpu=false)"
    if est.shape is None:
        return "train: memory check skipped: config.json has no decoder shape (hidden size, layers, vocabulary)"
    usable = config.gpu_memory_gib * GiB
    if _fits(est, usable):
        return (f"train: memory plan fits: {est.total_bytes / GiB:.1f} of {config.gpu_memory_gib:.1f} GiB per GPU "
                f"(train.gpu_memory_gib)")
    fixes = memory_fixes(est, config)
    message = (
        f"train: the memory plan needs {est.total_bytes / GiB:.1f} GiB per GPU but train.gpu_memory_gib is "
        f"{config.gpu_memory_gib:.1f} ({config.num_workers} GPU(s), {est.tokens} tokens per micro-batch):\n"
        f"{est.table()}\ncheapest fixes (GiB per GPU after each):\n" + "\n".join(f"  {f}" for f in fixes)
    )
    if config.memory_check == "warn":
        return message + "\nstarting anyway (train.memory_check=warn)"
    raise UserError(message + "\nor set train.memory_check=warn to start anyway")
