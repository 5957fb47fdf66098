"""The raw vLLM baseline of `ded bench rollout`: `vllm.LLM.generate` on the same prompts, no Ray.

Run as its own process (`python -m ded_ray.bench.raw_vllm`, the job as JSON on stdin, one JSON line out), so
its engine and KV cache are gone before the Ray engine starts, and it gets the same environment the Ray
engine actor gets (`vllm_env.cpu_env`). Start-up (the `LLM(...)` constructor) and generation are timed apart;
the result is the stdout line starting with `RESULT`.
"""

from __future__ import annotations

import json
import sys
import time

RESULT = "raw vllm result: "  # marks our line among vLLM's own log lines on stdout


def main() -> None:
    job = json.loads(sys.stdin.read())
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=job["model"], **job["engine_kwargs"])
    start_s = time.perf_counter() - started
    params = [SamplingParams(**p) for p in job["sampling_params"]]
    started = time.perf_counter()
    outputs = llm.generate(job["prompts"], params, use_tqdm=False)
    gen_s = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(RESULT + json.dumps({"start_s": start_s, "gen_s": gen_s, "tokens": tokens}), flush=True)


if __name__ == "__main__":
    main()
