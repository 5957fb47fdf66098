"""Per-GPU memory estimate of full fine-tuning under ZeRO 0-3, printed before training starts.

Model states follow the ZeRO paper's accounting for mixed-precision Adam (Rajbhandari et al. 2020), with
Psi parameters and N data-parallel ranks:

- parameters: 2 bytes each in bf16 (4 in fp32);
- gradients: same width as the parameters;
- optimizer: Adam's two moments in fp32 (8 bytes) plus, in bf16 training, an fp32 master copy (4 bytes):
  K = 12 bytes in bf16, 8 in fp32.

ZeRO-1 partitions the optimizer over N ranks, ZeRO-2 also the gradients, ZeRO-3 also the parameters.
Offloading moves the optimizer (and with ZeRO-3 optionally the parameters) to host memory: they count under
`cpu_bytes` instead. Activations are a rough estimate, listed apart: the model states are exact arithmetic,
activations depend on kernels (flash attention, fused loss) and on allocator slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GiB = 1024**3


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

    @property
    def model_states_bytes(self) -> float:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> float:
        return self.model_states_bytes + (self.activation_bytes or 0.0)

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
    vocab_size: int,
    bf16: bool = True,
    gradient_checkpointing: bool = False,
) -> float:
    """Rough activation bytes of one micro-batch (flash/varlen attention: nothing quadratic in length).

    Per token and layer a decoder block keeps about 10 hidden-sized and 3 intermediate-sized tensors for
    backward; with checkpointing only each layer's input is kept and one layer is recomputed at a time. The
    logits (and their gradient) of the whole micro-batch come on top: often the largest single item.
    """
    b = 2 if bf16 else 4
    t = tokens_per_micro_batch
    per_layer = t * (10 * hidden_size + 3 * intermediate_size) * b
    kept = num_layers * t * hidden_size * b + per_layer if gradient_checkpointing else num_layers * per_layer
    logits = 2 * t * vocab_size * b
    return float(kept + logits)


def count_parameters(model_path: str) -> tuple[int, dict]:
    """(parameter count, model config dict) without loading weights: the model is built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()), config.to_dict()


def estimate_for_model(model_path: str, config, num_gpus: int | None = None) -> MemoryEstimate:
    """The estimate for a model folder under a `TrainConfig` (ZeRO stage 0 for DDP), activations included."""
    num_params, cfg = count_parameters(model_path)
    n = num_gpus or config.num_workers
    stage = config.zero_stage if config.strategy == "deepspeed" else 0
    est = estimate_memory(num_params, stage, n, config.bf16, config.offload_optimizer, config.offload_params)
    tokens = config.micro_batch_size * (config.packed_tokens if config.packing else config.max_seq_len)
    acts = None
    if all(k in cfg for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")):
        acts = estimate_activations(
            tokens, cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"],
            config.bf16, config.gradient_checkpointing,
        )
    notes = [f"activations for {tokens} tokens per micro-batch"] if acts is not None else []
    if config.strategy == "ddp":
        notes.append("DDP replicates all states on every GPU (ZeRO-0); deepspeed + zero_stage 3 partitions them")
    return MemoryEstimate(est.num_params, est.zero_stage, est.num_gpus, est.params_bytes, est.grads_bytes,
                          est.optimizer_bytes, acts, est.cpu_bytes, notes)
