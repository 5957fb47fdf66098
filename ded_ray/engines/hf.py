"""The `hf` engine: transformers `generate` with sampling in a Ray Data actor pool. Runs anywhere.

Each actor loads the model once (`HFGenerator.__init__`) and generates one Ray Data batch per call:
- rows are sorted by prompt length and generated in sub-batches (left padding), so short prompts do not
  pay for long ones; the output keeps the input order;
- **per-row seeds**: sampling is done by `SeededSampler`, a logits processor that draws each row's token
  from that row's own `torch.Generator` (one uniform draw per row per step, inverse-CDF over the
  temperature/top-p distribution); `generate` itself runs greedy over the processor's one-hot scores.
  So a row's sample depends only on its seed and its own logits — not on the global RNG, not on which
  rows share its batch: the same batch gives the same responses, always. It is NOT bit-exact across
  batch compositions: other batch mates mean other padding and other GEMM shapes, the logits differ in
  the last bits (more in bf16), and once a draw sits on a shifted CDF boundary the rest of the response
  diverges. Measured: SmolLM2 in bf16, 16 new tokens, 4 rows generated as one sub-batch vs reordered in
  sub-batches of 2 — 2 of 4 responses changed (the two rows whose padding changed); a random-init tiny
  model, 32 new tokens, each row alone vs batched: 19 of 24 identical in fp32, 2 of 24 in bf16.
  Generating every row alone would make it exact at a large speed cost; we chose batching (vLLM's
  batch-variant numerics behave the same way). Each response is still a sample of its row's seed and
  distribution, so a resumed run (other batches) is statistically, not bitwise, the same run.
  Cost against transformers' own sampling: one `torch.rand` per row per step and a top-256 candidate
  set instead of a full vocabulary sort (exact: rows whose nucleus does not fit fall back to the sort);
  `ded bench rollout` measures it (case "plain, per-row seeded sampler").
- stop on EOS (the tokenizer's and the model's generation config's) or `max_tokens`;
- `token_entropy`: mean over the generated tokens of the entropy, in bits, of the model's full next-token
  distribution (raw logits, temperature 1, before top-p) — recorded inside the same processor, so no
  per-step score tensors are kept;
- a prompt longer than the model allows (`max_model_len`, else the model's `max_position_embeddings`,
  minus `max_tokens`) becomes an error row `prompt_too_long`; a row whose generation raises becomes an
  error row `engine_error` (its sub-batch is retried row by row first) — the batch goes on.

Engine-specific knobs come from `RolloutConfig.engine_kwargs` (keys the hf engine does not know are
ignored with a warning, since `engine: auto` may pass vLLM's kwargs here):
- `torch_threads` (int): intra-op threads per actor; default: `num_cpus_per_actor` (Ray sets
  OMP_NUM_THREADS to the actor's CPUs, so a 1-CPU actor would otherwise use one core);
- `sub_batch_size` (int): rows per `generate` call after sorting; default: `batch_size`;
- `attn_implementation` (str): passed to `from_pretrained`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import RolloutConfig, SamplingConfig
from ded_ray.engines.output import ENGINE_ERROR, PROMPT_TOO_LONG, error_row, ok_row, set_generation_columns
from ded_ray.ray_helpers import on_actors

log = logging.getLogger(__name__)

HF_ENGINE_KWARGS = ("torch_threads", "sub_batch_size", "attn_implementation")


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: str):
    """The torch dtype for `RolloutConfig.dtype` ("auto": bf16 where the hardware does it natively)."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


class SeededSampler:
    """Logits processor that samples each row from its own generator and returns one-hot scores.

    Put it last in the processor list and run `generate` greedy: argmax of the returned scores is the
    sampled token. `temperature == 0` means greedy (argmax of the raw logits). `entropy_bits[t][i]` is the
    entropy of row i's full distribution at step t (raw logits, temperature 1).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        import torch

        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        self.entropy_bits: list[Any] = []

    def __call__(self, input_ids, scores):
        import torch

        logits = scores.float()
        # Entropy of the full distribution: H = logsumexp(z) - sum(p * z), in nats → bits. (Cheaper than
        # summing -p log p, and exact for -inf logits' zero probabilities as long as p * z is not nan.)
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        p_raw = torch.exp(logits - lse)
        expected = torch.nan_to_num(p_raw * logits, nan=0.0).sum(-1)
        self.entropy_bits.append(((lse.squeeze(-1) - expected) / math.log(2)).cpu())
        if self.temperature == 0.0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = p_raw if self.temperature == 1.0 else torch.softmax(logits / self.temperature, dim=-1)
            # One uniform draw per row from the row's own generator: the row's randomness never depends
            # on the other rows in the batch.
            u = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(probs.device)
            chosen = sample_top_p(probs, u, self.top_p)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen.unsqueeze(-1), 0.0)
        return out


# Candidates looked at first for top-p: a full sort of a 49k vocabulary costs ~20x a top-k of 256 on CPU,
# and the nucleus of a trained model almost always fits in the top 256; rows where it does not fall back
# to the exact full sort, so the result is the same either way.
_TOP_K_FIRST = 256


def sample_top_p(probs, u, top_p: float):
    """Token index per row by inverse CDF: the smallest prefix of tokens (most probable first) whose mass
    reaches `top_p`, renormalised, sampled with the row's uniform draw `u` in [0, 1).

    Deterministic in (probs row, u row). `top_p >= 1` samples the full distribution without sorting.
    """
    import torch

    if top_p >= 1.0:
        cdf = probs.cumsum(dim=-1)
        pos = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True)
        return pos.clamp(max=probs.shape[-1] - 1).squeeze(-1)
    k = min(_TOP_K_FIRST, probs.shape[-1])
    top_p_vals, top_idx = probs.topk(k, dim=-1, sorted=True)
    chosen = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    fits = top_p_vals.sum(dim=-1) >= top_p
    if fits.any():
        chosen[fits] = _inverse_cdf(top_p_vals[fits], top_idx[fits], u[fits], top_p)
    if (~fits).any():
        full_vals, full_idx = probs[~fits].sort(dim=-1, descending=True)
        chosen[~fits] = _inverse_cdf(full_vals, full_idx, u[~fits], top_p)
    return chosen


def _inverse_cdf(sorted_p, sorted_idx, u, top_p: float):
    import torch

    mass_before = sorted_p.cumsum(dim=-1) - sorted_p
    kept = mass_before < top_p  # the smallest prefix whose mass reaches top_p (always >= 1 token)
    cdf = (sorted_p * kept).cumsum(dim=-1)
    pos = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True)
    pos = torch.minimum(pos, kept.sum(dim=-1, keepdim=True) - 1)  # float edge at the top of the CDF
    return sorted_idx.gather(-1, pos).squeeze(-1)


def _as_logits_processor(sampler: SeededSampler):
    """Wrap in a transformers `LogitsProcessorList` (import deferred: nothing heavy at import time)."""
    from transformers import LogitsProcessorList

    return LogitsProcessorList([sampler])


def split_engine_kwargs(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The hf engine's own keys from `engine_kwargs`; warns about the others (meant for another engine)."""
    ignored = sorted(k for k in engine_kwargs if k not in HF_ENGINE_KWARGS)
    if ignored:
        log.warning("hf engine: ignoring engine_kwargs %s (hf knows %s)", ignored, list(HF_ENGINE_KWARGS))
    return {k: v for k, v in engine_kwargs.items() if k in HF_ENGINE_KWARGS}


class HFGenerator:
    """Ray Data actor: a transformers model that fills the generation columns of a pandas batch."""

    def __init__(
        self,
        model_path: str,
        sampling: dict[str, Any],
        max_model_len: int | None = None,
        dtype: str = "auto",
        sub_batch_size: int = 32,
        torch_threads: int | None = None,
        attn_implementation: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ded_ray.models import resolve_model

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        model_path = str(resolve_model(model_path))  # on this actor's node: a name finds this node's copy
        self.sampling = SamplingConfig(**sampling)
        self.sub_batch_size = max(1, int(sub_batch_size))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = pick_dtype(dtype, self.device)
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the prompt
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype, **extra).to(self.device)
        self.model.eval()
        self.load_s = time.perf_counter() - started
        self.max_len = int(max_model_len or getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.eos_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        log.info("hf engine: loaded %s (%s, %s) in %.1fs", model_path, self.dtype, self.device, self.load_s)

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for value in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if v is not None and int(v) not in ids:
                    ids.append(int(v))
        if not ids:
            raise ValueError("hf engine: the model has no EOS token id (tokenizer and generation_config): cannot stop")
        return ids

    # --- one Ray Data batch ---------------------------------------------------------------------------
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in (S.PROMPT, S.SEED) if c not in batch.columns]
        if missing:
            raise ValueError(f"hf engine needs columns {missing}; the batch has {sorted(batch.columns)} (run the prompt stage first)")
        n = len(batch)
        results: list[dict[str, Any] | None] = [None] * n
        token_ids = self.tokenizer(list(batch[S.PROMPT]), add_special_tokens=False)["input_ids"]
        max_new = int(self.sampling.max_tokens)
        ok_rows = []
        for i, ids in enumerate(token_ids):
            if self.max_len is not None and len(ids) + max_new > self.max_len:
                results[i] = error_row(PROMPT_TOO_LONG)
                log.warning("hf engine: prompt of %d tokens + max_tokens %d > max length %d: row rejected (%s)",
                            len(ids), max_new, self.max_len, PROMPT_TOO_LONG)
            else:
                ok_rows.append(i)
        ok_rows.sort(key=lambda i: len(token_ids[i]))  # batching by length: little padding per sub-batch
        seeds = [int(s) for s in batch[S.SEED]]
        for start in range(0, len(ok_rows), self.sub_batch_size):
            rows = ok_rows[start : start + self.sub_batch_size]
            for i, result in zip(rows, self._generate_or_isolate([token_ids[i] for i in rows], [seeds[i] for i in rows])):
                results[i] = result
        return set_generation_columns(batch, results)

    def _generate_or_isolate(self, prompts: list[list[int]], seeds: list[int]) -> list[dict[str, Any]]:
        """Generate a sub-batch; if it raises, retry row by row so only the failing rows become errors."""
        try:
            return self.generate_ids(prompts, seeds)
        except Exception as exc:  # noqa: BLE001 - any model failure must become data, not kill the batch
            if len(prompts) == 1:
                log.warning("hf engine: row failed (%s: %s): %s", type(exc).__name__, exc, ENGINE_ERROR)
                return [error_row(ENGINE_ERROR)]
            log.warning("hf engine: sub-batch of %d failed (%s: %s); retrying row by row",
                        len(prompts), type(exc).__name__, exc)
            return [self._generate_or_isolate([p], [s])[0] for p, s in zip(prompts, seeds)]

    def generate_ids(self, prompts: list[list[int]], seeds: list[int]) -> list[dict[str, Any]]:
        """Sample one response per prompt (token ids, no padding) with the row's seed; one dict per row."""
        import torch
        from transformers import GenerationConfig

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, ids in enumerate(prompts):  # left padding
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids):] = 1
        sampler = SeededSampler(seeds, self.sampling.temperature, self.sampling.top_p)
        config = GenerationConfig(
            max_new_tokens=int(self.sampling.max_tokens),
            do_sample=False,  # the sampler does the sampling; greedy then takes its one-hot choice
            temperature=None, top_p=None, top_k=None,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                generation_config=config,
                logits_processor=_as_logits_processor(sampler),
            )
        generated = sequences[:, width:].cpu().tolist()
        entropy = torch.stack(sampler.entropy_bits, dim=1) if sampler.entropy_bits else None  # (rows, steps)
        eos = set(self.eos_ids)
        rows = []
        for r, tokens in enumerate(generated):
            stop_at = next((j for j, t in enumerate(tokens) if t in eos), None)
            if stop_at is None:
                body, count, reason = tokens, len(tokens), "length"
            else:
                body, count, reason = tokens[:stop_at], stop_at + 1, "stop"  # count includes the stop token
            mean_h = float(entropy[r, :count].mean()) if entropy is not None and count > 0 else None
            rows.append(ok_row(self.tokenizer.decode(body, skip_special_tokens=True), count, reason, mean_h))
        return rows


def generator_kwargs(model: str | Path, sampling: SamplingConfig, config: RolloutConfig) -> dict[str, Any]:
    """Constructor kwargs of `HFGenerator` from the rollout config (plain values: they travel to actors)."""
    own = split_engine_kwargs(config.engine_kwargs)
    return {
        "model_path": str(model),
        "sampling": sampling.model_dump(),
        "max_model_len": config.max_model_len,
        "dtype": config.dtype,
        "sub_batch_size": int(own.get("sub_batch_size") or config.batch_size),
        "torch_threads": int(own.get("torch_threads") or max(1, round(config.num_cpus_per_actor))),
        "attn_implementation": own.get("attn_implementation"),
    }


class HFEngine:
    """`RolloutEngine` over a transformers model; `generator_cls` lets a test swap in a subclass."""

    name = "hf"

    def __init__(self, generator_cls: type = HFGenerator):
        self.generator_cls = generator_cls

    # The signature of the RolloutEngine protocol (engines/base.py), which every engine repeats.
    def generate(
        self,
        ds,
        model: str,
        sampling: SamplingConfig,
        config: RolloutConfig,
        *,
        endpoint: str | None = None,
        api_key_env: str | None = None,
    ):
        if endpoint is not None:
            raise ValueError(f"the hf engine runs a local model; teacher endpoint {endpoint!r} needs `rollout.engine: openai`")
        return on_actors(
            ds.map_batches, self.generator_cls, config.concurrency,  # autoscales between its (min, max)
            fn_constructor_kwargs=generator_kwargs(model, sampling, config),
            num_cpus=config.num_cpus_per_actor,
            num_gpus=config.num_gpus_per_actor,
            batch_size=config.batch_size,
            batch_format="pandas",
        )
