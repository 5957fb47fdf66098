"""How well does the built-in SmolLM2-135M-Instruct solve the generated code families, per prompt style?

    .venv/bin/python docs/measure_code.py                     # all code families, the default styles
    .venv/bin/python docs/measure_code.py --families code_abs code_larger --questions 20 --samples 4

The chats are built exactly as the pipeline builds them (`PromptStage.messages` + `.render`: the model's
chat template, the code instructions and starter code appended to the question), sampled with plain
transformers `generate` (left padding, batched, bf16 where available), and graded by the real sandbox
(`verifiers.code.run_tests`). Prints one markdown table row per family × style and writes the raw
numbers (and, with --responses, every response) as JSON. Results: docs/code-measured.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ded_ray import schema as S
from ded_ray.generated import CODE_FAMILIES, generate_problems
from ded_ray.stages.prompt import PromptStage, code_instructions

MODEL = "smollm2-135m"

# The worked example is a function no family asks for; its user turn is shaped like a real code prompt
# (the question, then the pipeline's own instructions and starter code).
EXAMPLE_QUESTION = "Write a Python function `square(x)` that returns x multiplied by itself."
EXAMPLE_USER = f"{EXAMPLE_QUESTION}\n\n" + code_instructions(
    json.dumps([{"type": "assert", "code": "", "entry_point": "square"}]), json.dumps({"starter_code": "def square(x):"}))
EXAMPLE_FENCED = "```python\ndef square(x):\n    return x * x\n```"
EXAMPLE_BARE = "def square(x): return x * x"

CODE_SYSTEM = "You are a Python programmer. Write the function the user asks for, in a single ```python code block."
TERSE_SYSTEM = "Answer with only the code, nothing else."

STYLES: dict[str, tuple[str | None, list[dict]]] = {
    "sys": (CODE_SYSTEM, []),  # zero-shot with a system prompt: the student
    "1shot": (CODE_SYSTEM, [{"user": EXAMPLE_USER, "assistant": EXAMPLE_FENCED}]),  # worked example: the teacher
    "terse_1shot": (TERSE_SYSTEM, [{"user": EXAMPLE_USER, "assistant": EXAMPLE_BARE}]),  # terse: bare one-liner
    "terse_sys": (TERSE_SYSTEM, []),
    "none": (None, []),  # no system prompt, no example
}
FENCE_PY = re.compile(r"```[ \t]*(python3?|py3?)\b", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(CODE_FAMILIES))
    ap.add_argument("--styles", nargs="+", default=["sys", "1shot", "terse_1shot"], choices=sorted(STYLES))
    ap.add_argument("--questions", type=int, default=10, help="questions per family")
    ap.add_argument("--samples", type=int, default=3, help="samples per question")
    ap.add_argument("--problem-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=48, help="sequences per generate call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--via-read-problems", action="store_true",
                    help="take the rows through io.read_problems, as a `generated:` source in a config does")
    ap.add_argument("--out", default="/tmp/code-measured.json")
    ap.add_argument("--responses", default=None, help="also write every response (JSONL)")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ded_ray.engines.hf import pick_dtype
    from ded_ray.models import resolve_model
    from ded_ray.verifiers.code import run_tests

    torch.set_num_threads(args.threads)
    path = str(resolve_model(MODEL))
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    dtype = pick_dtype("auto", "cpu")  # what the hf engine picks: bf16 where the CPU does it natively
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = model.generation_config.eos_token_id
    stop_ids = {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}

    problems = generate_problems(args.families, args.questions, args.problem_seed)
    if args.via_read_problems:
        from ded_ray.config import GeneratedProblems, ProblemSource
        from ded_ray.io import read_problems

        source = ProblemSource(generated=GeneratedProblems(families=args.families, per_family=args.questions,
                                                           seed=args.problem_seed))
        read = read_problems(source)[0].to_dict("records")
        for row, original in zip(read, problems):  # read_problems keeps the order; meta for the table only
            row["_family_meta"] = original[S.META]
        problems = read
    pool = ThreadPoolExecutor(max_workers=args.threads)
    results, started = [], time.monotonic()
    gen_tokens, gen_s = 0, 0.0
    for style in args.styles:
        system, few_shot = STYLES[style]
        stage = PromptStage(path, system, few_shot)
        jobs = []  # (problem, prompt) × samples, sorted by prompt length so batches pad little
        for p in problems:
            chat = stage.messages(p[S.QUESTION], p[S.DOMAIN], p[S.TESTS], p[S.META])
            prompt = stage.render(chat)
            jobs += [(p, prompt)] * args.samples
        jobs.sort(key=lambda j: len(j[1]))
        torch.manual_seed(args.seed)
        futures = []
        for i in range(0, len(jobs), args.batch_size):
            batch = jobs[i:i + args.batch_size]
            enc = tok([prompt for _, prompt in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            t0 = time.monotonic()
            with torch.inference_mode():
                out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.95,
                                     max_new_tokens=args.max_new_tokens, pad_token_id=pad_id)
            gen_s += time.monotonic() - t0
            new = out[:, enc["input_ids"].shape[1]:]
            for (p, _), ids in zip(batch, new.tolist()):
                n = next((k + 1 for k, t in enumerate(ids) if t in stop_ids), len(ids))  # EOS counts
                gen_tokens += n
                text = tok.decode(ids, skip_special_tokens=True)
                futures.append((style, p, text, n, pool.submit(run_tests, text, json.loads(p[S.TESTS]))))
            print(f"[{time.monotonic() - started:6.0f}s] {style}: {min(i + args.batch_size, len(jobs))}/{len(jobs)}",
                  file=sys.stderr, flush=True)
        for style_, p, text, n, fut in futures:
            verdict = fut.result()
            meta = json.loads(p.get("_family_meta", p[S.META]))
            results.append({"style": style_, "family": meta["family"], "kind": meta.get("kind"),
                            "problem_id": p[S.PROBLEM_ID], "question": p[S.QUESTION], "tokens": n,
                            "status": verdict.status, "python_block": bool(FENCE_PY.search(text)),
                            "any_fence": "```" in text, "response": text})
        Path(args.out).with_suffix(".partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))

    table = summarize(results, args)
    print(f"\ngenerated {gen_tokens} tokens in {gen_s:.0f} s ({gen_tokens / max(gen_s, 1e-9):.0f} tok/s); "
          f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(table)
    Path(args.out).write_text(json.dumps({"args": vars(args), "model": MODEL, "dtype": str(dtype),
                                          "gen_tokens": gen_tokens, "gen_s": gen_s,
                                          "styles": {s: STYLES[s] for s in args.styles},
                                          "cells": cells(results)}, indent=1))
    if args.responses:
        with open(args.responses, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
    return 0


def cells(results: list[dict]) -> dict:
    by = defaultdict(list)
    for r in results:
        by[(r["family"], r["style"])].append(r)
    out = {}
    for (family, style), rows in by.items():
        per_q = defaultdict(list)
        for r in rows:
            per_q[r["problem_id"]].append(r["status"] == "correct")
        rates = [sum(v) / len(v) for v in per_q.values()]
        kinds = defaultdict(list)
        for r in rows:
            kinds[r["kind"]].append(r["status"] == "correct")
        out[f"{family}|{style}"] = {
            "family": family, "style": style, "n": len(rows), "questions": len(per_q),
            "samples": len(rows) // max(len(per_q), 1),
            "pass": sum(r["status"] == "correct" for r in rows) / len(rows),
            "python_block": sum(r["python_block"] for r in rows) / len(rows),
            "any_fence": sum(r["any_fence"] for r in rows) / len(rows),
            "q0": sum(x == 0 for x in rates) / len(rates), "q1": sum(x == 1 for x in rates) / len(rates),
            "qmid": sum(0 < x < 1 for x in rates) / len(rates),
            "mean_tokens": sum(r["tokens"] for r in rows) / len(rows),
            "statuses": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
            "by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(kinds.items())},
        }
    return out


def summarize(results: list[dict], args) -> str:
    lines = [("| family | style | pass rate | questions × samples | ```python block | questions 0 / between / 1 "
              "| mean tokens | pass by kind |"), "|---|---|---|---|---|---|---|---|"]
    c = cells(results)
    for family in args.families:
        for style in args.styles:
            x = c.get(f"{family}|{style}")
            if x is None:
                continue
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in x["by_kind"].items()) if len(x["by_kind"]) > 1 else ""
            lines.append(f"| {family} | {style} | {x['pass']:.2f} | {x['questions']} × {x['samples']} | "
                         f"{x['python_block']:.2f} | {x['q0']:.2f} / {x['qmid']:.2f} / {x['q1']:.2f} | "
                         f"{x['mean_tokens']:.0f} | {kinds} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
