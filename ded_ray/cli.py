"""The `ded` command: the whole pipeline (`ded run`) and one subcommand per step, all in this file.

Every subcommand takes `--config PATH` (default: the embedded demo) and `key.sub=value` overrides; each has
a `cmd_*` function that runs its step into the config's run directory (so every step is resumable like the
full pipeline) and, where it takes flags of its own, an `add_*` function for them. `COMMANDS` lists them.
Bad input (config, paths, model names) prints one clear message and exits with status 1. Heavy modules are
imported inside the commands, so `ded --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from ded_ray import schema as S
from ded_ray.config import BenchmarkConfig, DEDConfig, ProblemSource, load_config
from ded_ray.errors import UserError

EXIT_FAILED = 1
EXIT_USAGE = 2


# --- run, bench ----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.pipeline import run_pipeline

    _check_plan(args, config)
    run_pipeline(config)
    return 0


def add_skip_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-plan", action="store_true",
                        help="do not run `ded plan`'s checks first (context lengths, GPU placement, KV cache, "
                             "training memory, disk)")


def _check_plan(args: argparse.Namespace, config: DEDConfig, smoke: bool | None = None, pipeline: bool = True) -> None:
    """`ded plan`'s checks against the machines the run will get; raises PlanError (a UserError) on a misfit."""
    from ded_ray.log import log
    from ded_ray.preflight import require_fit

    if args.skip_plan:
        log("plan: skipped (--skip-plan): context lengths, GPU placement, KV cache, training memory and disk unchecked")
        return
    plan = require_fit(config, smoke=smoke, pipeline=pipeline)
    log(f"plan: fits {plan.where} ({len(plan.findings)} checks; `ded plan` prints them)")


# --- plan ----------------------------------------------------------------------------------------------


def add_plan(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", help="a Ray cluster config (cluster.yaml): plan against its node types")
    where.add_argument("--address", help="a running cluster (ray://host:10001, auto): plan against its nodes")
    parser.add_argument("--smoke", choices=("auto", "yes", "no"), default="yes",
                        help="plan the smoke test too (yes, the default), never, or as `ded run` would (teacher: auto)")


def cmd_plan(args: argparse.Namespace, config: DEDConfig) -> int:
    """Print the plan; exit 1 when something cannot work (each reason with its fix)."""
    from ded_ray.preflight import machines_for, plan_run

    machines = machines_for(args.cluster, args.address or (None if args.cluster else config.ray.address),
                            config.ray.num_cpus)
    plan = plan_run(config, machines, smoke={"yes": True, "no": False, "auto": None}[args.smoke])
    print(plan.render())
    return EXIT_FAILED if plan.problems else 0


def cmd_bench(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.bench.suite import markdown_table, run_benchmarks

    names = [o for o in args.overrides if "=" not in o]  # `ded bench rollout verify`
    rows = run_benchmarks(names, quick=args.quick, out_dir=Path(args.out))
    print(markdown_table(rows))
    return 0


def add_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller cases: a smoke run of the suite")
    parser.add_argument("--out", default="bench", help="folder for bench.md and bench.json (default: bench/)")


def _open(config: DEDConfig):
    from ded_ray.ray_session import init_ray
    from ded_ray.rundir import open_run

    init_ray(config.ray, config.models)
    return open_run(config)


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

    _check_plan(args, config, smoke=True, pipeline=False)
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
    result = generate_rollouts(run, config, steps.load_problems(run, config), [config.teacher_config(name)])
    print(f"{result.rows} rollouts in {result.folder.path}")
    return 0


# --- verify --------------------------------------------------------------------------------------------


def _add_input_output(parser: argparse.ArgumentParser, what_in: str, what_out: str) -> None:
    parser.add_argument("--input", required=True, help=f"{what_in}: a parquet file or folder")
    parser.add_argument("--output", required=True, help=f"where to write {what_out} (parquet)")


def add_verify(parser: argparse.ArgumentParser) -> None:
    _add_input_output(parser, "rollouts", "the verified rows")


def cmd_verify(args: argparse.Namespace, config: DEDConfig) -> int:
    import ray.data

    from ded_ray.ray_session import init_ray
    from ded_ray.stages.verify import verify_rows

    rollouts = _read_table(args.input)
    missing = [c for c in (S.DOMAIN, S.RESPONSE) if c not in rollouts.column_names]
    if missing:
        raise UserError(f"{args.input}: rollouts need columns {missing}")
    init_ray(config.ray, config.models)
    ds = verify_rows(ray.data.from_arrow(rollouts), config.verify, config.student.model)
    verified = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow")), promote_options="permissive")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(verified, args.output)
    counts = verified.to_pandas()[S.VERDICT].value_counts().to_dict()
    print(f"{verified.num_rows} rows verified → {args.output}: {counts}")
    return 0


# --- curate --------------------------------------------------------------------------------------------


def add_curate(parser: argparse.ArgumentParser) -> None:
    _add_input_output(parser, "verified teacher rollouts", "the corpus")


def cmd_curate(args: argparse.Namespace, config: DEDConfig) -> int:
    """The pipeline's curation half (`pipeline.curate_corpus`) on rollouts verified elsewhere."""
    import shutil

    from ded_ray import plan
    from ded_ray.pipeline import curate_corpus
    from ded_ray.rundir import run_stage
    from ded_ray.stages.correctness import reject_incorrect

    verified_in = _read_table(args.input).to_pandas()
    missing = [c for c in (S.VERDICT, S.ROLLOUT_ID) if c not in verified_in]
    if missing:
        raise UserError(f"{args.input}: run `ded verify` on `ded rollout`'s output first (no {missing} column)")
    run = _open(config)
    problems = run_stage(run, plan.PROBLEMS, lambda _done: verified_in[
        [c for c in S.PROBLEM_SCHEMA.names if c in verified_in]].drop_duplicates(S.PROBLEM_ID))
    verified = run_stage(run, plan.CORRECTNESS, lambda done: reject_incorrect(
        verified_in[~verified_in[S.ROLLOUT_ID].isin(done)]))
    corpus = curate_corpus(run, config, verified, problems)
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
    from ded_ray.serve.deploy import serve_teachers, served_model_id, shutdown_teachers

    names = args.teacher or [t.name for t in config.teachers if t.endpoint is None]
    teachers = [config.teacher_config(n) for n in names]
    init_ray(config.ray, config.models)
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
    from ded_ray.analysis.report import write_report
    from ded_ray.steps.ablate import ablate, ablation_table

    run = _open(config)
    try:
        summary = ablate(run, config, only=args.arms.split(",") if args.arms else None, seeds=args.seeds)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(ablation_table(summary))
    print(f"report → {write_report(run)}")
    return 0


def add_ablate(parser: argparse.ArgumentParser) -> None:
    from ded_ray.steps.ablate import ARMS, DEFAULT_SEEDS

    parser.add_argument("--arms", help=f"comma-separated arms to train (default: all of {','.join(ARMS)}; "
                                       "the gaps to the control need `random` among them)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help=f"trainings per arm, each with its own train seed and row order (default {DEFAULT_SEEDS})")


# --- fetch ---------------------------------------------------------------------------------------------


def add_fetch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-node", action="store_true",
                        help="download on every alive Ray node, into its own copy of a node-local models.root")


def cmd_fetch(args: argparse.Namespace, config: DEDConfig) -> int:
    """Download the config's Hugging Face models into `models.root` (ded_ray/fetch.py)."""
    from ded_ray.fetch import fetch_models, fetch_per_node, format_outcomes, models_to_fetch

    root = config.models.root
    if not root:
        raise UserError("ded fetch needs a models root: set `models.root` in the config (or models.root=PATH), "
                        "a folder on every node or an s3:// / gs:// URI")
    targets = models_to_fetch(config)
    if not targets:
        print("nothing to fetch: the config names no Hugging Face model ids (built-ins and folders need none)")
        return 0
    if args.per_node:
        from ded_ray.ray_session import init_ray

        init_ray(config.ray, config.models)
        outcomes = fetch_per_node(targets, root)
    else:
        outcomes = fetch_models(targets, root)
    print(format_outcomes(outcomes))
    return 0


# --- prepare -------------------------------------------------------------------------------------------


def add_prepare(parser: argparse.ArgumentParser) -> None:
    from ded_ray.prepare import CONVERTERS

    parser.add_argument("name", choices=sorted(CONVERTERS), metavar="NAME",
                        help="; ".join(f"{n}: {c.description}" for n, c in sorted(CONVERTERS.items())))
    parser.add_argument("--out", help="problem file to write (default: data/NAME.jsonl, as ded-32b.yaml reads)")
    parser.add_argument("--source", help="a downloaded file or folder of the dataset instead of the Hub")
    parser.add_argument("--limit", type=int, help="stop after this many problems")


def cmd_prepare(args: argparse.Namespace, config: DEDConfig) -> int:
    """Write a problem file from its public dataset (ded_ray/prepare/); rejected rows go beside it."""
    from ded_ray.prepare import prepare

    print(prepare(args.name, out=args.out, source=args.source, limit=args.limit).report())
    return 0


# --- the registry ------------------------------------------------------------------------------------

# name -> (one-line help, handler, extra-argument adder)
Handler = Callable[[argparse.Namespace, DEDConfig], int]
COMMANDS: dict[str, tuple[str, Handler, Callable[[argparse.ArgumentParser], None] | None]] = {
    "run": ("run the whole DED pipeline (embedded demo when no --config)", cmd_run, add_skip_plan),
    "plan": ("check what each stage asks of the machines, and whether it fits, before running", cmd_plan, add_plan),
    "smoke-test": ("rank candidate teachers by the student each one produces", cmd_smoke_test, add_skip_plan),
    "rollout": ("generate M teacher samples per question on Ray Data", cmd_rollout, add_rollout),
    "verify": ("check answers (math-verify) and run code tests in a sandbox", cmd_verify, add_verify),
    "curate": ("pass-rate compression, diversity selection, mixing, decontamination", cmd_curate,
               add_curate),
    "train": ("fine-tune the student on a corpus with Ray Train (+ DeepSpeed)", cmd_train, add_train),
    "eval": ("evaluate a model: avg@k pass@1 with standard errors per benchmark", cmd_eval, add_eval),
    "serve": ("host teachers as OpenAI-compatible endpoints on Ray Serve", cmd_serve, add_serve),
    "report": ("write report.html for a run directory", cmd_report, add_report),
    "ablate": ("train on the corpus after each curation step and compare", cmd_ablate, add_ablate),
    "bench": ("run stage benchmarks and write a table (markdown + json)", cmd_bench, add_bench),
    "fetch": ("download the config's Hugging Face models into models.root (every node)", cmd_fetch, add_fetch),
    "prepare": ("write a problem file (s1k, codeforces, aime2024, ...) from its public dataset", cmd_prepare,
                add_prepare),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ded",
        description="ded_ray: data-efficient distillation of reasoning models on Ray (DED, arXiv 2508.09883).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _handler, add_args) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", help="YAML config path or shipped config name (default: demo.yaml)")
        sub.add_argument("overrides", nargs="*", metavar="key.sub=value",
                         help="config overrides" + ("; for bench also the benchmark names to run" if name == "bench" else ""))
        if add_args is not None:
            add_args(sub)
    return parser


def _deepspeed_on_cpu_quietly() -> None:
    """DeepSpeed, which accelerate imports when transformers loads a model, warns "Setting accelerator to CPU"
    each time it finds no GPU: on a CPU machine that is the expected case, not news. Its own override
    (DS_ACCELERATOR) makes the same choice without the warning; a user's DS_ACCELERATOR wins. Local Ray's
    workers inherit it; a cluster's workers do not (the trainer sets it for CPU training workers)."""
    if "DS_ACCELERATOR" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _deepspeed_on_cpu_quietly()
    _help, handler, _ = COMMANDS[args.command]
    try:
        config = load_config(args.config, [o for o in args.overrides if "=" in o or args.command != "bench"])
    except UserError as exc:
        print(f"ded {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return handler(args, config)
    except UserError as exc:
        print(f"ded {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
