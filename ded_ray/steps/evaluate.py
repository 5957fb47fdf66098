"""Evaluation step: k samples per benchmark question from a model, verified, scored as avg@k pass@1.

Each model label samples every benchmark in ONE engine pass into a run directory of its own, `eval/<label>/`
(the plan's SAMPLE and SAMPLE_VERIFY stages), so it resumes like any stage and loads the model once: a 32B
vLLM engine takes minutes to start, and the paper's evaluation has four benchmarks. Problem ids are
prefixed with their benchmark's name there (two benchmarks may share a problem); scores, per benchmark,
land in `eval.json[label]`.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import DEDConfig
from ded_ray.evaluate import format_table, in_date_window, score_benchmark
from ded_ray.io import read_problems
from ded_ray.log import log
from ded_ray.rundir import EVAL_FILE, RunDir
from ded_ray.stages.rollout import student_target
from ded_ray.steps.generate import generate_rollouts, verify

EVAL_SEED_OFFSET = 1000  # evaluation samples never reuse a training rollout's seed
BENCH_SEP = "/"  # eval problem ids: <benchmark>/<problem id>, unique when two benchmarks share a problem
SCORED_COLUMNS = [S.PROBLEM_ID, S.DOMAIN, S.VERDICT, S.NUM_TOKENS, S.META]


def evaluate_model(run: RunDir, config: DEDConfig, model: str, label: str) -> dict:
    """Score `model` (with the student's prompt) on every configured benchmark; results go to eval.json[label]."""
    if not config.eval.benchmarks:
        raise ValueError("evaluate_model needs `eval.benchmarks`")
    if config.eval.max_model_len is not None:  # the evaluation's own context (its budget exceeds training's)
        config = config.model_copy(update={"rollout": config.rollout.model_copy(
            update={"max_model_len": config.eval.max_model_len})})
    student = config.student.model_copy(update={"model": model})
    target = student_target(student, name=label, sampling=config.eval.sampling)
    problems, bench_of, facts = benchmark_problems(config)
    sub = run.sub("eval", label)
    rollouts = generate_rollouts(sub, config, pa.Table.from_pandas(problems, preserve_index=False), [target],
                                 stage=plan.SAMPLE, samples=config.eval.k, seed_offset=EVAL_SEED_OFFSET,
                                 reject_errors=False)
    verified = verify(sub, config, rollouts, stage=plan.SAMPLE_VERIFY, filter_incorrect=False)
    scored = verified.table(columns=SCORED_COLUMNS, kept_only=False).to_pandas()
    scored_bench = scored[S.PROBLEM_ID].map(bench_of)
    results = {}
    for bench in config.eval.benchmarks:
        rows = scored[scored_bench == bench.name]
        results[bench.name] = {**score_benchmark(rows), **facts[bench.name]}
    record_eval(run, label, model, results)
    log(f"[eval {label}]\n{format_table(results)}")
    return results


def benchmark_problems(config: DEDConfig) -> tuple[pd.DataFrame, dict[str, str], dict[str, dict]]:
    """Every benchmark's problems in one table (ids `<benchmark>/<problem_id>`), {that id: benchmark}, and per
    benchmark the facts its score carries: unreadable input rows and, with a date window, the window and
    how many problems fell outside it."""
    tables, bench_of, facts = [], {}, {}
    for bench in config.eval.benchmarks:
        problems, rejected = read_problems(bench.source)
        problems, outside = in_date_window(problems, bench.date_from, bench.date_to, bench.name)
        problems = problems.assign(**{S.PROBLEM_ID: bench.name + BENCH_SEP + problems[S.PROBLEM_ID]})
        tables.append(problems)
        bench_of.update(dict.fromkeys(problems[S.PROBLEM_ID], bench.name))
        facts[bench.name] = {"unreadable_rows": len(rejected)}
        if bench.date_from or bench.date_to:
            facts[bench.name]["window"] = {"from": str(bench.date_from or ""), "to": str(bench.date_to or ""),
                                           "outside": outside}
    return pd.concat(tables, ignore_index=True), bench_of, facts


def record_eval(run: RunDir, label: str, model: str, results: dict) -> None:
    """Merge one model's results into eval.json (and the manifest)."""
    current = run.read_json(EVAL_FILE)
    current[label] = {"model": model, "benchmarks": results}
    run.write_json(EVAL_FILE, current)
    run.update_manifest(eval={label: {"model": model, "benchmarks": results}})


def read_eval(run: RunDir) -> dict:
    return run.read_json(EVAL_FILE)


def base_scores(run: RunDir, config: DEDConfig) -> dict:
    """The untrained student's results per benchmark, evaluated once per run and read back after."""
    results = read_eval(run).get("base", {}).get("benchmarks")
    if results is None:
        results = evaluate_model(run, config, config.student.model, "base")
    return results
