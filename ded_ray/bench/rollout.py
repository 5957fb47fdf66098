"""`ded bench rollout`: generated tokens/s of the rollout engines, each beside the baseline it must keep up with.

Same model (SmolLM2-135M-Instruct, `resolve_model("smollm2-135m")`), same prompts (256 generated arithmetic
questions of the four math families with a system prompt and one worked example, as the demo's teacher),
same sampling (temperature 0.7, top-p 0.95, up to 256 new tokens), same threads (all cores), side by side:

- `plain transformers.generate`: one process, no Ray, transformers' own sampling (global RNG), the
  prompts in the batches of 32 Ray Data makes (in row order), each sorted by prompt length, left padding,
  bf16 where the CPU does it natively — the baseline;
- `plain, per-row seeded sampler`: the same batches through `HFGenerator` without Ray: the cost of our
  per-row seeds (engines/hf.py); and once more as ONE call over all prompts, which sorts all of them by
  prompt length before cutting sub-batches: what batch composition alone is worth. A padded batch runs
  until its longest response stops, so which rows share a batch moves tokens/s by a fifth on this mix;
  comparing the Ray path with the one-call figure (as this bench did until 2026-12-03) charges Ray for it;
- `plain vllm.LLM.generate` (when vLLM is installed): raw vLLM in a process of its own, with the Ray
  engine's engine kwargs and per-row seeds (`raw_vllm.py`), engine start timed apart;
- `hf engine via Ray Data`, `vllm engine via Ray Data`: the engines on a Ray Dataset, end to end (actor
  start, model load, engine start and Ray Data's scheduling included), and in steady state: each runs once
  on one batch and once on all prompts, and the difference of the two cancels their start-up.

Generation-only figures exclude model load; end-to-end figures run from "nothing loaded" to "all rows
back" (Ray itself already started). Each case samples its own responses, so token counts differ a little;
tokens/s normalises that. `quick`: 16 prompts, 32 new tokens, batches of 8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial

import pandas as pd

from ded_ray import schema as S
from ded_ray.bench.common import result_row
from ded_ray.bench.raw_vllm import RESULT
from ded_ray.config import FewShotExample, RolloutConfig, SamplingConfig
from ded_ray.log import log

BENCH = "rollout"
SYSTEM = "You are a careful math tutor. Reason briefly, step by step, and give the final answer as \\boxed{answer}."
EXAMPLE = FewShotExample(user="What is 2 + 3?", assistant="2 + 3 = 5. The answer is \\boxed{5}.")
PLAIN = "plain transformers.generate (no Ray)"
SEEDED = "plain, per-row seeded sampler (no Ray)"
SEEDED_ONE_CALL = "plain, per-row seeded sampler, one call over all prompts (no Ray)"
RAY_HF = "hf engine via Ray Data"
RAY_VLLM = "vllm engine via Ray Data"
RAW_VLLM = "plain vllm.LLM.generate (no Ray)"


_row = partial(result_row, BENCH, digits=3)


def bench_prompts(model_path: str, n: int) -> pd.DataFrame:
    """`n` prompted rows (fan-out of 1 sample, the demo teacher's prompt), ready for any engine."""
    from ded_ray.generated import MATH_FAMILIES, generate_problems
    from ded_ray.stages.fanout import fan_out
    from ded_ray.stages.prompt import PromptStage

    families = list(MATH_FAMILIES)  # all four: the 1-digit ones alone hold only 81 distinct questions each
    problems = pd.DataFrame(generate_problems(families, n // len(families), seed=0))
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
    tokens = 0
    started = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        batch = sorted(prompts[i : i + batch_size], key=lambda p: len(tokenizer(p, add_special_tokens=False)["input_ids"]))
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=None, max_new_tokens=sampling.max_tokens, pad_token_id=eos)
        for seq in out[:, enc["input_ids"].shape[1]:].tolist():
            tokens += seq.index(eos) + 1 if eos in seq else len(seq)  # stop token included, as the engines count
    return {"load_s": load_s, "gen_s": time.perf_counter() - started, "tokens": tokens}


def seeded_generate(model_path: str, rows: pd.DataFrame, sampling: SamplingConfig, batch_size: int,
                    threads: int, one_call: bool = False) -> dict[str, float]:
    """`HFGenerator` called directly (no Ray) on the batches Ray Data would hand an actor, or on all rows in
    `one_call` (sorted together by prompt length). Returns load_s, gen_s, tokens."""
    from ded_ray.engines.hf import HFGenerator

    started = time.perf_counter()
    generator = HFGenerator(model_path, sampling.model_dump(), sub_batch_size=batch_size, torch_threads=threads)
    load_s = time.perf_counter() - started
    step = len(rows) if one_call else batch_size
    started = time.perf_counter()
    tokens = sum(int(generator(rows.iloc[i : i + step])[S.NUM_TOKENS].sum()) for i in range(0, len(rows), step))
    return {"load_s": load_s, "gen_s": time.perf_counter() - started, "tokens": tokens}


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


def raw_vllm_generate(model_path: str, rows: pd.DataFrame, sampling: SamplingConfig,
                      config: RolloutConfig) -> dict[str, float]:
    """`vllm.LLM.generate` in a process of its own (`raw_vllm.py`), with the Ray engine's engine kwargs,
    environment and per-row sampling. Returns start_s, gen_s, tokens."""
    from ded_ray.engines.vllm import processor_config, sampling_params
    from ded_ray.vllm_env import cpu_env

    engine_kwargs = dict(processor_config(model_path, config).engine_kwargs)
    engine_kwargs.pop("task_type", None)  # ray.data.llm's own key, not an argument of vllm.LLM
    job = {
        "model": model_path,
        "engine_kwargs": engine_kwargs,
        "prompts": rows[S.PROMPT].tolist(),
        "sampling_params": [sampling_params(sampling, int(seed)) for seed in rows[S.SEED]],
    }
    env = {**os.environ, **cpu_env(config.num_cpus_per_actor)}
    done = subprocess.run([sys.executable, "-m", "ded_ray.bench.raw_vllm"], input=json.dumps(job), text=True,
                          capture_output=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"raw vLLM exited with {done.returncode}: {done.stderr[-500:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        raise RuntimeError(f"raw vLLM printed no result line: {done.stdout[-300:]!r}")
    return json.loads(lines[-1][len(RESULT):])


def steady(large: dict[str, float], small: dict[str, float]) -> float | None:
    """Steady-state tokens/s of a Ray Data path: the extra tokens of the large run over its extra seconds,
    so the start-up both runs pay (actors, model load, engine start) cancels out. None when the large run
    is not a second longer (the quick sizes): start-up noise would be all the difference measures."""
    extra_s = large["e2e_s"] - small["e2e_s"]
    return (large["tokens"] - small["tokens"]) / extra_s if extra_s >= 1.0 else None


def run(quick: bool = False) -> list[dict]:
    import ray

    from ded_ray.engines import vllm_usable
    from ded_ray.models import resolve_model

    # Full size: enough prompts for the engines to reach steady state (issue 20: >= 256, up to 256 new
    # tokens); the small run beside each Ray case is one batch, whose difference cancels start-up.
    n, max_tokens, batch = (16, 32, 8) if quick else (256, 256, 32)
    threads = os.cpu_count() or 1
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=max_tokens)
    model = str(resolve_model("smollm2-135m"))
    rows = bench_prompts(model, n)
    small_rows = rows.head(batch)
    prompts = rows[S.PROMPT].tolist()
    load_before = os.getloadavg()[0]
    setting = f"{n} prompts, T=0.7, top-p 0.95, max {max_tokens} new tokens, batch {batch}, {threads} threads"
    results: list[dict] = []

    log(f"[bench rollout] {PLAIN}")
    plain = plain_generate(model, prompts, sampling, batch, threads)
    log(f"[bench rollout] {SEEDED}")
    seeded = seeded_generate(model, rows, sampling, batch, threads)
    log(f"[bench rollout] {SEEDED_ONE_CALL}")
    one_call = seeded_generate(model, rows, sampling, batch, threads, one_call=True)
    usable, why = vllm_usable()
    vllm_config = RolloutConfig(engine="vllm", batch_size=batch, concurrency=(1, 1), num_cpus_per_actor=threads)
    raw_vllm = None
    if usable:
        log(f"[bench rollout] {RAW_VLLM}")
        try:
            raw_vllm = raw_vllm_generate(model, rows, sampling, vllm_config)
        except Exception as exc:  # noqa: BLE001 - a broken optional engine is reported, not fatal
            why = f"raw vLLM failed: {type(exc).__name__}: {str(exc)[:200]}"
            log(f"[bench rollout] {why}")

    # Ray: logical CPUs = cores + 1, so the engine actor can hold all cores (its threads) while the light
    # 0.1-CPU stages around it still get scheduled.
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=threads + 1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        log(f"[bench rollout] {RAY_HF} ({batch} and {n} prompts)")
        hf_config = RolloutConfig(engine="hf", batch_size=batch, concurrency=(1, 1), num_cpus_per_actor=threads)
        ray_hf_small = engine_generate("hf", model, small_rows, sampling, hf_config)
        ray_hf = engine_generate("hf", model, rows, sampling, hf_config)
        vllm = vllm_small = None
        if raw_vllm is not None:
            log(f"[bench rollout] {RAY_VLLM} ({batch} and {n} prompts)")
            try:
                vllm_small = engine_generate("vllm", model, small_rows, sampling, vllm_config)
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
    ray_hf_e2e = ray_hf["tokens"] / ray_hf["e2e_s"]
    mean = lambda r: f"mean {r['tokens'] / n:.0f} tokens/response"  # noqa: E731
    differenced = f"start-up cancelled: ({n}-prompt run - {batch}-prompt run) tokens / seconds"
    results += [
        _row(PLAIN, "gen_tokens_per_s", plain_gen, "tokens/s", note=f"{setting}; {mean(plain)}; transformers sampling"),
        _row(PLAIN, "e2e_tokens_per_s", plain_e2e, "tokens/s", note=f"load {plain['load_s']:.1f}s included"),
        _row(SEEDED, "gen_tokens_per_s", seeded_gen, "tokens/s", PLAIN, plain_gen, note=mean(seeded)),
        _row(SEEDED, "e2e_tokens_per_s", seeded_e2e, "tokens/s", PLAIN, plain_e2e, note=f"load {seeded['load_s']:.1f}s included"),
        _row(SEEDED_ONE_CALL, "gen_tokens_per_s", one_call["tokens"] / one_call["gen_s"], "tokens/s", SEEDED, seeded_gen,
             note=f"{mean(one_call)}; all {n} prompts sorted by length together: batch composition, not Ray"),
        _row(RAY_HF, "e2e_tokens_per_s", ray_hf_e2e, "tokens/s", PLAIN, plain_e2e,
             note=f"{mean(ray_hf)}; actor start + load included ({ray_hf['e2e_s']:.1f}s); 1 actor, {threads} threads"),
        _row(RAY_HF, "e2e_tokens_per_s_vs_seeded", ray_hf_e2e, "tokens/s", SEEDED, seeded_e2e,
             note="same generator with and without Ray: the overhead Ray Data adds"),
        _row(RAY_HF, "steady_tokens_per_s_vs_seeded", steady(ray_hf, ray_hf_small), "tokens/s", SEEDED, seeded_gen,
             note=f"{differenced}; the baseline's generation without its load (goal >= 0.9)"),
    ]
    # A shared machine's load moves every figure; the ratios hold only when it stayed steady.
    results.append(_row("machine", "load_average_1min", os.getloadavg()[0], "runnable",
                        note=f"{load_before:.1f} at the start, this value at the end; {threads} cores"))
    if raw_vllm is None:
        return results + [_row(RAW_VLLM, "gen_tokens_per_s", None, "tokens/s", note=f"skipped: {why}")]
    raw_gen = raw_vllm["tokens"] / raw_vllm["gen_s"]
    raw_e2e = raw_vllm["tokens"] / (raw_vllm["start_s"] + raw_vllm["gen_s"])
    results += [
        _row(RAW_VLLM, "gen_tokens_per_s", raw_gen, "tokens/s", PLAIN, plain_gen,
             note=f"{mean(raw_vllm)}; engine start {raw_vllm['start_s']:.1f}s excluded"),
        _row(RAW_VLLM, "e2e_tokens_per_s", raw_e2e, "tokens/s", PLAIN, plain_e2e, note="engine start included"),
    ]
    if vllm is None:
        return results + [_row(RAY_VLLM, "e2e_tokens_per_s", None, "tokens/s", note=f"skipped: {why}")]
    vllm_e2e = vllm["tokens"] / vllm["e2e_s"]
    return results + [
        _row(RAY_VLLM, "e2e_tokens_per_s", vllm_e2e, "tokens/s", RAW_VLLM, raw_e2e,
             note=f"{mean(vllm)}; engine start included ({vllm['e2e_s']:.1f}s); {vllm['errors']} error rows"),
        _row(RAY_VLLM, "steady_tokens_per_s_vs_raw", steady(vllm, vllm_small), "tokens/s", RAW_VLLM, raw_gen,
             note=f"{differenced}; the baseline's generation without its engine start (goal >= 0.9)"),
        _row(RAY_VLLM, "e2e_tokens_per_s_vs_hf", vllm_e2e, "tokens/s", RAY_HF, ray_hf_e2e,
             note="the two engines end to end through Ray Data: which one a run of this size should use"),
    ]


if __name__ == "__main__":  # python -m ded_ray.bench.rollout [--quick]
    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
