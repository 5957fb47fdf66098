"""`ded bench rollout`: generated tokens/s of the rollout engines against a plain transformers loop.

Same model (SmolLM2-135M-Instruct, `resolve_model("smollm2-135m")`), same prompts (64 generated 1-digit
addition/multiplication questions with a system prompt and one worked example, as the demo's teacher),
same sampling (temperature 0.7, top-p 0.95, up to 128 new tokens), same threads (all cores), side by side:

- `plain transformers.generate`: one process, no Ray, transformers' own sampling (global RNG), batches of
  32 sorted by prompt length, left padding, bf16 where the CPU does it natively — the baseline;
- `plain, per-row seeded sampler`: the same loop through `HFGenerator` without Ray: the cost of our
  per-row seeds (engines/hf.py);
- `hf engine via Ray Data`: `HFEngine.generate` on a Ray Dataset (actor start, model load and Ray Data's
  scheduling included): the overhead Ray adds;
- `vllm engine via Ray Data` (when vLLM is installed): `get_engine("vllm")`, engine start included.

Generation-only figures exclude model load; end-to-end figures run from "nothing loaded" to "all rows
back" (Ray itself already started). Each case samples its own responses, so token counts differ a little;
tokens/s normalises that. `quick`: 16 prompts, 32 new tokens.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial

import pandas as pd

from ded_ray import schema as S
from ded_ray.bench.common import result_row
from ded_ray.config import FewShotExample, RolloutConfig, SamplingConfig
from ded_ray.log import log

BENCH = "rollout"
SYSTEM = "You are a careful math tutor. Reason briefly, step by step, and give the final answer as \\boxed{answer}."
EXAMPLE = FewShotExample(user="What is 2 + 3?", assistant="2 + 3 = 5. The answer is \\boxed{5}.")
PLAIN = "plain transformers.generate (no Ray)"
SEEDED = "plain, per-row seeded sampler (no Ray)"
RAY_HF = "hf engine via Ray Data"
RAY_VLLM = "vllm engine via Ray Data"


_row = partial(result_row, BENCH, digits=3)


def bench_prompts(model_path: str, n: int) -> pd.DataFrame:
    """`n` prompted rows (fan-out of 1 sample, the demo teacher's prompt), ready for any engine."""
    from ded_ray.generated import generate_problems
    from ded_ray.stages.fanout import fan_out
    from ded_ray.stages.prompt import PromptStage

    problems = pd.DataFrame(generate_problems(["add_1digit", "mul_1digit"], n // 2, seed=0))
    return PromptStage(model_path, SYSTEM, [EXAMPLE])(fan_out(problems, ["bench"], 1, base_seed=0))


def plain_generate(model_path: str, prompts: list[str], sampling: SamplingConfig, batch_size: int,
                   threads: int) -> dict[str, float]:
    """The baseline: transformers' own sampling in this process. Returns load_s, gen_s, tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ded_ray.engines.hf import pick_dtype

    torch.set_num_threads(threads)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=pick_dtype("auto", "cpu")).eval()
    load_s = time.perf_counter() - started
    eos = tokenizer.eos_token_id
    ordered = sorted(prompts, key=lambda p: len(tokenizer(p, add_special_tokens=False)["input_ids"]))
    tokens = 0
    started = time.perf_counter()
    for i in range(0, len(ordered), batch_size):
        enc = tokenizer(ordered[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=None, max_new_tokens=sampling.max_tokens, pad_token_id=eos)
        for seq in out[:, enc["input_ids"].shape[1]:].tolist():
            tokens += seq.index(eos) + 1 if eos in seq else len(seq)  # stop token included, as the engines count
    return {"load_s": load_s, "gen_s": time.perf_counter() - started, "tokens": tokens}


def seeded_generate(model_path: str, rows: pd.DataFrame, sampling: SamplingConfig, batch_size: int,
                    threads: int) -> dict[str, float]:
    """`HFGenerator` called directly (no Ray): the per-row seeded sampler's cost against `plain_generate`."""
    from ded_ray.engines.hf import HFGenerator

    started = time.perf_counter()
    generator = HFGenerator(model_path, sampling.model_dump(), sub_batch_size=batch_size, torch_threads=threads)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    out = generator(rows)
    return {"load_s": load_s, "gen_s": time.perf_counter() - started, "tokens": int(out[S.NUM_TOKENS].sum())}


def engine_generate(engine_name: str, model_path: str, rows: pd.DataFrame, sampling: SamplingConfig,
                    config: RolloutConfig) -> dict[str, float]:
    """End to end through Ray Data: build the dataset, generate, collect. Returns e2e_s, tokens, errors."""
    import ray.data

    from ded_ray.engines import get_engine

    started = time.perf_counter()
    ds = get_engine(engine_name).generate(ray.data.from_pandas(rows), model_path, sampling, config)
    out = ds.to_pandas()
    e2e_s = time.perf_counter() - started
    if len(out) != len(rows):
        raise RuntimeError(f"{engine_name} engine returned {len(out)} rows for {len(rows)}")
    return {"e2e_s": e2e_s, "tokens": int(out[S.NUM_TOKENS].sum()), "errors": int(out[S.ERROR].notna().sum())}


def run(quick: bool = False) -> list[dict]:
    import ray

    from ded_ray.engines import vllm_usable
    from ded_ray.models import resolve_model

    n, max_tokens, batch = (16, 32, 16) if quick else (64, 128, 32)
    threads = os.cpu_count() or 1
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=max_tokens)
    model = str(resolve_model("smollm2-135m"))
    rows = bench_prompts(model, n)
    prompts = rows[S.PROMPT].tolist()
    load_before = os.getloadavg()[0]
    setting = f"{n} prompts, T=0.7, top-p 0.95, max {max_tokens} new tokens, batch {batch}, {threads} threads"
    results: list[dict] = []

    log(f"[bench rollout] {PLAIN}")
    plain = plain_generate(model, prompts, sampling, batch, threads)
    log(f"[bench rollout] {SEEDED}")
    seeded = seeded_generate(model, rows, sampling, batch, threads)

    # Ray: logical CPUs = cores + 1, so the engine actor can hold all cores (its threads) while the light
    # 0.1-CPU stages around it still get scheduled.
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=threads + 1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        log(f"[bench rollout] {RAY_HF}")
        hf_config = RolloutConfig(engine="hf", batch_size=batch, concurrency=(1, 1), num_cpus_per_actor=threads)
        ray_hf = engine_generate("hf", model, rows, sampling, hf_config)
        usable, why = vllm_usable()
        vllm = None
        if usable:
            log(f"[bench rollout] {RAY_VLLM}")
            vllm_config = RolloutConfig(engine="vllm", batch_size=n, concurrency=(1, 1), num_cpus_per_actor=threads)
            try:
                vllm = engine_generate("vllm", model, rows, sampling, vllm_config)
            except Exception as exc:  # noqa: BLE001 - a broken optional engine is reported, not fatal
                why = f"vllm engine failed: {type(exc).__name__}: {str(exc)[:200]}"
                log(f"[bench rollout] {why}")
    finally:
        if started_ray:
            ray.shutdown()

    plain_gen = plain["tokens"] / plain["gen_s"]
    plain_e2e = plain["tokens"] / (plain["load_s"] + plain["gen_s"])
    seeded_gen = seeded["tokens"] / seeded["gen_s"]
    seeded_e2e = seeded["tokens"] / (seeded["load_s"] + seeded["gen_s"])
    mean = lambda r: f"mean {r['tokens'] / n:.0f} tokens/response"  # noqa: E731
    results += [
        _row(PLAIN, "gen_tokens_per_s", plain_gen, "tokens/s", note=f"{setting}; {mean(plain)}; transformers sampling"),
        _row(PLAIN, "e2e_tokens_per_s", plain_e2e, "tokens/s", note=f"load {plain['load_s']:.1f}s included"),
        _row(SEEDED, "gen_tokens_per_s", seeded_gen, "tokens/s", PLAIN, plain_gen, note=mean(seeded)),
        _row(SEEDED, "e2e_tokens_per_s", seeded_e2e, "tokens/s", PLAIN, plain_e2e, note=f"load {seeded['load_s']:.1f}s included"),
        _row(RAY_HF, "e2e_tokens_per_s", ray_hf["tokens"] / ray_hf["e2e_s"], "tokens/s", PLAIN, plain_e2e,
             note=f"{mean(ray_hf)}; actor start + load included ({ray_hf['e2e_s']:.1f}s); 1 actor, {threads} threads"),
        _row(RAY_HF, "e2e_tokens_per_s_vs_seeded", ray_hf["tokens"] / ray_hf["e2e_s"], "tokens/s", SEEDED, seeded_e2e,
             note="same generator with and without Ray: the overhead Ray Data adds"),
    ]
    # A shared machine's load moves every figure; the ratios hold only when it stayed steady.
    results.append(_row("machine", "load_average_1min", os.getloadavg()[0], "runnable",
                        note=f"{load_before:.1f} at the start, this value at the end; {threads} cores"))
    if vllm is not None:
        vllm_tps = vllm["tokens"] / vllm["e2e_s"]
        results += [
            _row(RAY_VLLM, "e2e_tokens_per_s", vllm_tps, "tokens/s", PLAIN, plain_e2e,
                 note=f"{mean(vllm)}; engine start included ({vllm['e2e_s']:.1f}s); {vllm['errors']} error rows"),
            _row(RAY_VLLM, "e2e_tokens_per_s_vs_hf", vllm_tps, "tokens/s", RAY_HF, ray_hf["tokens"] / ray_hf["e2e_s"]),
        ]
    else:
        results.append(_row(RAY_VLLM, "e2e_tokens_per_s", None, "tokens/s", note=f"skipped: {why}"))
    return results


if __name__ == "__main__":  # python -m ded_ray.bench.rollout [--quick]
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
