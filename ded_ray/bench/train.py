"""`ded bench train`: SFT throughput on this machine — packed vs padded batches, DDP vs DeepSpeed ZeRO-2/3.

Length mix: the real reasoning traces' lengths (`reasoning_traces_thought_anchors`, when `../shared/data` or
`$DED_SHARED_DATA` has them; about 4 characters per token) — long-tailed, median ~1.2k and p90 ~4k tokens —
scaled down so the longest fits the CPU context; a lognormal of the same shape when the traces are absent.

Cases (each a real Ray Train run on a local 2-CPU Ray, side by side in one process):
- padding fraction of padded vs packed micro-batches on that mix (pure arithmetic, also at the real 16k scale);
- training tokens/s (real tokens, padding excluded) of a small random-init Llama with the SmolLM2 tokenizer:
  1 worker DDP packed vs padded; 2 workers DDP vs DeepSpeed ZeRO-2 vs ZeRO-3 (packed).
Steady-state figures skip each run's first step (warm-up: allocations, first collectives).
- the SFT loss alone: plain vs chunked cross-entropy (train.loss) at 4k and 16k tokens on a 1-layer random
  Llama with SmolLM2's 49k vocabulary and width 576, every position a target (a long chain of thought): tokens/s
  of forward + backward, and peak memory as the growth of the process's max RSS over one step, each case in a
  fresh subprocess (torch's CPU allocator returns large blocks to the OS, so RSS follows live tensors; the
  high-water mark is what an OOM sees). Next to it, what train/memory.py plans for the same shape (fp32).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from ded_ray.bench.common import result_row, shared_data_file
from ded_ray.log import log

BENCH = "train"
TRACES = "reasoning_traces_thought_anchors/traces_by_problem.jsonl"
CHARS_PER_TOKEN = 4.0


_row = partial(result_row, BENCH)



def shared_traces_path() -> Path | None:
    return shared_data_file(str(TRACES))


def real_token_lengths() -> tuple[np.ndarray, str]:
    """Approximate token lengths (prompt + completion) of the real traces, or a lognormal stand-in."""
    path = shared_traces_path()
    if path is None:
        rng = np.random.default_rng(0)
        return np.clip(rng.lognormal(np.log(1200), 0.7, 2890), 200, 5500).astype(int), "lognormal(median 1200, sigma 0.7)"
    lengths = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            lengths += [(len(row["prompt"]) + len(t["completion"])) / CHARS_PER_TOKEN for t in row["traces"]]
    return np.asarray(lengths, dtype=int), f"{len(lengths)} real traces ({TRACES}), ~{CHARS_PER_TOKEN:.0f} chars/token"


def scaled(lengths: np.ndarray, max_len: int, floor: int = 48) -> np.ndarray:
    """Lengths scaled so the longest becomes `max_len`; the shape of the distribution is kept."""
    return np.maximum(floor, (lengths * (max_len / lengths.max())).astype(int))


def padding_fraction(lengths, packing: bool, micro_batch_size: int, max_len: int) -> float:
    """Share of the micro-batch slots that are padding: each row is padded to the longest row of its
    micro-batch (packed rows hold several samples, at most `max_len` tokens)."""
    from ded_ray.train.packing import plan_micro_batches

    lengths = [int(x) for x in lengths]
    plan = plan_micro_batches(lengths, packing, micro_batch_size, max_len)
    slots = sum(len(mb) * max(sum(lengths[i] for i in row) for row in mb) for mb in plan)
    return 1 - sum(lengths) / slots


def _steady(history: list[dict]) -> dict:
    steady = history[1:] or history
    seconds = sum(h["step_time_s"] for h in steady)
    return {
        "tokens_per_s": sum(h["tokens"] for h in steady) / seconds if seconds else None,
        "padding_fraction": statistics.mean(h["padding_fraction"] for h in steady),
        "step_time_s": statistics.median(h["step_time_s"] for h in steady),
        "micro_batches": statistics.mean(h["micro_batches"] for h in steady),
    }


def _train_case(corpus, model_path: str, steps: int, **overrides) -> dict:
    from ded_ray.config import TrainConfig
    from ded_ray.train.trainer import train_student

    config = TrainConfig(**{
        "max_seq_len": 512, "micro_batch_size": 4, "global_batch_size": 16, "learning_rate": 1e-4,
        "max_steps": steps, "epochs": 100, "shuffle": True, "max_failures": 0, **overrides,
    })
    with tempfile.TemporaryDirectory(prefix="ded-bench-train-") as out:
        result = train_student(corpus, model_path, config, Path(out) / "run")
    return _steady(result.history)


LOSS_VOCAB, LOSS_HIDDEN, LOSS_INTER, LOSS_CHUNK = 49152, 576, 1536, 1024  # SmolLM2-135M's shape, one layer


def _loss_case(kind: str, tokens: int, steps: int) -> dict:
    """Runs in its own process (see `loss_case_rows`): tokens/s and max-RSS growth of `steps` loss steps."""
    import resource
    import time

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ded_ray.train.loss import summed_token_loss
    from ded_ray.train.packing import MicroBatch

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=LOSS_VOCAB, hidden_size=LOSS_HIDDEN, intermediate_size=LOSS_INTER, num_hidden_layers=1,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=tokens, tie_word_embeddings=True,
    ))
    model.config._attn_implementation = "sdpa"

    def micro(n: int) -> MicroBatch:
        ids = torch.randint(0, LOSS_VOCAB, (1, n))
        return MicroBatch(ids, torch.randint(0, LOSS_VOCAB, (1, n)), None, None, 1, n)

    def step(mb: MicroBatch) -> None:
        model.zero_grad(set_to_none=True)
        summed_token_loss(model, mb, "cpu", kind, LOSS_CHUNK).backward()

    step(micro(16))  # thread pools, allocator, lazy imports: not part of the measured peak
    big = micro(tokens)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    for _ in range(steps):
        step(big)
    seconds = time.perf_counter() - started
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    return {"tokens_per_s": steps * tokens / seconds, "peak_bytes": peak}


def _available_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return float(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return float("inf")


def loss_case_rows(quick: bool = False) -> list[dict]:
    """Plain vs chunked loss at 4k and 16k tokens, side by side (each case in a fresh process)."""
    from ded_ray.train.memory import GiB, estimate_activations, estimate_loss

    steps = 1 if quick else 2
    rows = []
    for tokens in (4096, 16384):
        measured = {}
        for kind in ("plain", "chunked"):
            case = f"loss {kind}, {tokens} tokens, vocab {LOSS_VOCAB}"
            planned = (estimate_loss(kind, tokens, LOSS_HIDDEN, LOSS_VOCAB, bf16=False, chunk_tokens=LOSS_CHUNK)
                       + estimate_activations(tokens, LOSS_HIDDEN, 1, LOSS_INTER, bf16=False))
            if planned * 1.3 > _available_bytes():  # a shared machine: do not OOM the neighbours
                note = f"skipped: plans {planned / GiB:.1f} GiB, {_available_bytes() / GiB:.1f} GiB available"
                rows.append(_row(case, "peak_memory_gib", None, "GiB", note=note))
                continue
            log(f"[bench train] {case}")
            out = subprocess.run([sys.executable, "-m", "ded_ray.bench.train", "--loss-case", kind, str(tokens),
                                  str(steps)], capture_output=True, text=True, check=True)
            measured[kind] = m = json.loads(out.stdout.strip().splitlines()[-1])
            base = measured.get("plain") if kind == "chunked" else None
            base_case = case.replace(kind, "plain", 1) if base else None
            note = f"forward + backward, {steps} step(s), every position a target, chunk {LOSS_CHUNK}, fp32 CPU"
            rows.append(_row(case, "tokens_per_s", m["tokens_per_s"], "tokens/s", base_case,
                             base and base["tokens_per_s"], note=note))
            rows.append(_row(case, "peak_memory_gib", m["peak_bytes"] / GiB, "GiB", base_case,
                             base and base["peak_bytes"] / GiB, note="max RSS growth over the step(s)"))
            rows.append(_row(case, "planned_memory_gib", planned / GiB, "GiB",
                             note="train/memory.py: loss + 1 layer of activations"))
    return rows


def run(quick: bool = False) -> list[dict]:
    """All cases. `quick`: 3 steps per run and 4 runs (about 5-10 minutes on 2 busy cores); full: 6 steps, 5 runs."""
    import ray

    from ded_ray.models import build_tiny_model
    from ded_ray.train.synthetic import length_mix_corpus

    rows: list[dict] = []
    real, source = real_token_lengths()
    for micro in (4, 8):
        for packing in (False, True):
            kind = "packed" if packing else "padded"
            rows.append(_row(f"real lengths, 16k context, micro-batch {micro}, {kind}", "padding_fraction",
                             padding_fraction(real, packing, micro, 16384), "fraction", note=source))

    max_len, n_samples = 512, 160
    rng = np.random.default_rng(0)
    mix = scaled(rng.choice(real, size=n_samples, replace=False), max_len)
    note = f"{n_samples} samples, lengths scaled to max {max_len} (median {int(np.median(mix))})"
    rows.append(_row("scaled mix, micro-batch 4, padded", "padding_fraction", padding_fraction(mix, False, 4, max_len),
                     "fraction", note=note))
    rows += loss_case_rows(quick)
    corpus = length_mix_corpus(mix, seed=0)

    # Small but not trivial: 4 layers, hidden 256 (~14M parameters, most of them the 49k-token embedding).
    model_path = str(build_tiny_model(num_layers=4, hidden_size=256, num_heads=4, intermediate_size=768))
    steps = 3 if quick else 6
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _node_ip_address="127.0.0.1")  # a private local Ray: nothing listens beyond this machine
    try:
        cases = {
            "1 worker DDP padded": dict(strategy="ddp", num_workers=1, packing=False),
            "1 worker DDP packed": dict(strategy="ddp", num_workers=1, packing=True),
            "2 workers DDP packed": dict(strategy="ddp", num_workers=2),
            "2 workers ZeRO-3 packed": dict(strategy="deepspeed", zero_stage=3, num_workers=2),
        }
        if not quick:
            cases["2 workers ZeRO-2 packed"] = dict(strategy="deepspeed", zero_stage=2, num_workers=2)
        measured = {}
        for case, overrides in cases.items():
            log(f"[bench train] {case}")
            measured[case] = _train_case(corpus, model_path, steps, **overrides)
    finally:
        if started_ray:
            ray.shutdown()

    for case, m in measured.items():
        baseline = {"1 worker DDP packed": "1 worker DDP padded"}.get(case)
        if case.startswith("2 workers") and case != "2 workers DDP packed":
            baseline = "2 workers DDP packed"
        base = measured[baseline]["tokens_per_s"] if baseline else None
        rows.append(_row(case, "tokens_per_s", m["tokens_per_s"], "tokens/s", baseline, base,
                         note=f"{steps} steps of 16 samples, first step excluded"))
        rows.append(_row(case, "padding_fraction", m["padding_fraction"], "fraction"))
        rows.append(_row(case, "step_time_s", m["step_time_s"], "s", note=f"{m['micro_batches']:.1f} micro-batches/step"))
    return rows


if __name__ == "__main__":  # python -m ded_ray.bench.train [--quick] | --loss-case KIND TOKENS STEPS
    if sys.argv[1:2] == ["--loss-case"]:
        print(json.dumps(_loss_case(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        for r in run(quick="--quick" in sys.argv):
            print(json.dumps(r))
