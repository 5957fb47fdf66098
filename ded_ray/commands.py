"""One function per `ded` subcommand: parse its own flags (`add_*`), run the step (`cmd_*`).

Each command starts or joins Ray per the config, runs its step into the config's run directory (so every
step is resumable like the full pipeline) and prints where the output went.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ded_ray import schema as S
from ded_ray.config import BenchmarkConfig, DEDConfig, ProblemSource
from ded_ray.errors import UserError
from ded_ray.log import log


def _open(config: DEDConfig):
    from ded_ray import steps
    from ded_ray.ray_session import init_ray

    init_ray(config.ray)
    return steps.open_run(config)


def _read_table(path: str) -> pa.Table:
    target = Path(path)
    if not target.exists():
        raise UserError(f"{path} does not exist: give a parquet file or a folder of parquet parts")
    if target.is_dir():
        parts = sorted(p for p in target.rglob("*.parquet") if not p.name.startswith("."))
        if not parts:
            raise UserError(f"{path} holds no parquet files")
        return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")
    return pq.read_table(target)


# --- smoke-test ----------------------------------------------------------------------------------------


def cmd_smoke_test(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray import steps
    from ded_ray.steps.smoke import smoke_test

    run = _open(config)
    summary = smoke_test(run, config, steps.load_problems(run, config))
    print(json.dumps({k: v for k, v in summary.items() if k != "chart_png"}, indent=2, default=str))
    return 0


# --- rollout -------------------------------------------------------------------------------------------


def add_rollout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problems", help="problem file (jsonl/parquet/datasets folder) instead of the config's")
    parser.add_argument("--teacher", help="teacher name (default: the config's `teacher`, or the first)")


def cmd_rollout(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray import steps
    from ded_ray.steps.generate import generate_rollouts

    if args.problems:
        config = config.model_copy(update={"problems": config.problems.model_copy(
            update={"sources": [ProblemSource(path=args.problems)]})})
    name = args.teacher or (config.teacher if config.teacher != "auto" else None)
    if name is None:
        if not config.teachers:
            raise UserError("no teachers configured: add one under `teachers`")
        name = config.teachers[0].name
    run = _open(config)
    table = generate_rollouts(run, config, steps.load_problems(run, config), [config.teacher_config(name)])
    print(f"{table.num_rows} rollouts in {run.stage(3, 'rollout').path}")
    return 0


# --- verify --------------------------------------------------------------------------------------------


def add_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="rollouts: a parquet file or folder")
    parser.add_argument("--output", required=True, help="parquet file to write the verified rows to")


def cmd_verify(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.ray_session import init_ray
    from ded_ray.stages.verify import verify_rows
    import ray.data

    rollouts = _read_table(args.input)
    missing = [c for c in (S.DOMAIN, S.RESPONSE) if c not in rollouts.column_names]
    if missing:
        raise UserError(f"{args.input}: rollouts need columns {missing}")
    init_ray(config.ray)
    ds = verify_rows(ray.data.from_arrow(rollouts), config.verify, config.student.model)
    verified = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow")), promote_options="permissive")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(verified, args.output)
    counts = verified.to_pandas()[S.VERDICT].value_counts().to_dict()
    print(f"{verified.num_rows} rows verified → {args.output}: {counts}")
    return 0


# --- curate --------------------------------------------------------------------------------------------


def add_curate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="verified teacher rollouts: a parquet file or folder")
    parser.add_argument("--output", required=True, help="where to write the corpus (parquet)")


def cmd_curate(args: argparse.Namespace, config: DEDConfig) -> int:
    import shutil

    from ded_ray.runner import run_stage
    from ded_ray.stages.correctness import reject_incorrect
    from ded_ray.steps import curate, generate

    verified_in = _read_table(args.input)
    if S.VERDICT not in verified_in.column_names:
        raise UserError(f"{args.input}: run `ded verify` first (no `verdict` column)")
    run = _open(config)
    verified = run_stage(run, *generate.STAGE_CORRECTNESS,
                         lambda _done: reject_incorrect(verified_in.to_pandas()), id_column=None)
    student = generate.student_rollouts(run, config, verified)
    hard = curate.drop_easy_questions(run, config, verified, student)
    diverse = curate.keep_diverse(run, config, hard)
    corpus = curate.finish_corpus(run, config, diverse)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(corpus, args.output)
    print(f"corpus → {args.output}")
    return 0


# --- train ---------------------------------------------------------------------------------------------


def add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="corpus parquet (a `messages` column)")
    parser.add_argument("--model", help="student model (default: the config's student.model)")
    parser.add_argument("--output", help="output folder (default: the run directory); student/ goes inside")


def cmd_train(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.train.trainer import train_student

    if not Path(args.corpus).exists():
        raise UserError(f"corpus {args.corpus} does not exist")
    run = _open(config)
    result = train_student(args.corpus, args.model or config.student.model, config.train, args.output or run.path)
    print(f"student → {result.student_dir} ({result.total_steps} steps; rejected {result.rejected or 'none'})")
    return 0


# --- eval ----------------------------------------------------------------------------------------------


def add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model to evaluate (default: the config's student.model)")
    parser.add_argument("--benchmarks", help="comma-separated benchmark names from the config, or file paths")
    parser.add_argument("--label", default="eval", help="name of this model in eval.json")


def cmd_eval(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.evaluate import format_table
    from ded_ray.steps.evaluate import evaluate_model

    if args.benchmarks:
        known = {b.name: b for b in config.eval.benchmarks}
        chosen = []
        for item in args.benchmarks.split(","):
            item = item.strip()
            if item in known:
                chosen.append(known[item])
            elif Path(item).exists():
                chosen.append(BenchmarkConfig(name=Path(item).stem, source=ProblemSource(path=item)))
            else:
                raise UserError(f"benchmark {item!r} is neither a configured benchmark {sorted(known)} nor a file")
        config = config.model_copy(update={"eval": config.eval.model_copy(update={"benchmarks": chosen})})
    if not config.eval.benchmarks:
        raise UserError("no benchmarks: pass --benchmarks or configure `eval.benchmarks`")
    run = _open(config)
    results = evaluate_model(run, config, args.model or config.student.model, args.label)
    print(format_table(results))
    print(f"eval.json → {run.file('eval.json')}")
    return 0


# --- serve ---------------------------------------------------------------------------------------------


def add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", action="append", help="teacher to serve (repeatable; default: all)")


def cmd_serve(args: argparse.Namespace, config: DEDConfig) -> int:
    import time

    from ded_ray.ray_session import init_ray
    from ded_ray.serve.deploy import served_model_id, serve_teachers, shutdown_teachers

    names = args.teacher or [t.name for t in config.teachers if t.endpoint is None]
    teachers = [config.teacher_config(n) for n in names]
    init_ray(config.ray)
    endpoints = serve_teachers(teachers, config.smoke)
    for teacher in teachers:
        print(f"{teacher.name}: {endpoints[teacher.name]}  (OpenAI-compatible; model id {served_model_id(teacher)!r})")
    print("serving; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        shutdown_teachers()
    return 0


# --- report --------------------------------------------------------------------------------------------


def add_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="run directory (default: the config's run.root/run.name)")


def cmd_report(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.analysis.report import write_report
    from ded_ray.rundir import RunDir

    if args.run:
        root, name = str(Path(args.run).parent), Path(args.run).name
    else:
        root, name = config.run.root, config.run.name
    run = RunDir(root, name)
    if not run.read_manifest():
        raise UserError(f"{run.uri} has no manifest.json: is it a ded run directory?")
    print(f"report → {write_report(run)}")
    return 0


# --- ablate --------------------------------------------------------------------------------------------


def cmd_ablate(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.steps.ablate import ablate, ablation_table

    run = _open(config)
    try:
        summary = ablate(run, config)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(ablation_table(summary))
    return 0
