"""Evaluation step: k samples per benchmark question from a model, verified, scored as avg@k pass@1."""

from __future__ import annotations

import json

import pyarrow as pa

from ded_ray.config import DEDConfig
from ded_ray.evaluate import format_table, score_benchmark
from ded_ray.io import read_problems
from ded_ray.log import log
from ded_ray.rundir import RunDir
from ded_ray.stages.rollout import student_target
from ded_ray.steps.generate import generate_rollouts, verify

EVAL_FILE = "eval.json"
FIRST_EVAL_STAGE = 20  # eval stages are numbered after the pipeline's


def evaluate_model(run: RunDir, config: DEDConfig, model: str, label: str, slot: int = 0) -> dict:
    """Score `model` (with the student's prompt) on every configured benchmark; results go to eval.json[label]."""
    student = config.student.model_copy(update={"model": model})
    target = student_target(student, name=label, sampling=config.eval.sampling)
    results = {}
    for i, bench in enumerate(config.eval.benchmarks):
        problems, rejected = read_problems(bench.source)
        index = FIRST_EVAL_STAGE + 2 * (slot * len(config.eval.benchmarks) + i)
        stage = f"eval_{label}_{bench.name}"
        rollouts = generate_rollouts(run, config, pa.Table.from_pandas(problems, preserve_index=False), [target],
                                     stage=(index, f"{stage}_rollout"), samples=config.eval.k,
                                     seed_offset=1000 + slot, reject_errors=False)
        verified = verify(run, config, rollouts, stage=(index + 1, f"{stage}_verify"), filter_incorrect=False)
        results[bench.name] = score_benchmark(verified.to_pandas())
        results[bench.name]["unreadable_rows"] = len(rejected)
    record_eval(run, label, model, results)
    log(f"[eval {label}]\n{format_table(results)}")
    return results


def record_eval(run: RunDir, label: str, model: str, results: dict) -> None:
    """Merge one model's results into eval.json (and the manifest)."""
    path = run.file(EVAL_FILE)
    try:
        with run.fs.open_input_stream(path) as src:
            current = json.loads(src.read().decode())
    except FileNotFoundError:
        current = {}
    current[label] = {"model": model, "benchmarks": results}
    with run.fs.open_output_stream(path) as out:
        out.write(json.dumps(current, indent=2).encode())
    run.update_manifest(eval={label: {"model": model, "benchmarks": results}})


def read_eval(run: RunDir) -> dict:
    try:
        with run.fs.open_input_stream(run.file(EVAL_FILE)) as src:
            return json.loads(src.read().decode())
    except FileNotFoundError:
        return {}
