"""The `ded` command: the whole pipeline (`ded run`) and one subcommand per step.

Every subcommand takes `--config PATH` (default: the embedded demo) and `key.sub=value` overrides.
Bad input (config, paths, model names) prints one clear message and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from ded_ray import commands
from ded_ray.config import DEDConfig, load_config
from ded_ray.errors import UserError

EXIT_FAILED = 1
EXIT_USAGE = 2


def _cmd_run(args: argparse.Namespace, config: DEDConfig) -> int:
    from ded_ray.pipeline import run_pipeline

    run_pipeline(config)
    return 0


def _cmd_bench(args: argparse.Namespace, config: DEDConfig) -> int:
    from pathlib import Path

    from ded_ray.bench.suite import markdown_table, run_benchmarks

    names = [o for o in args.overrides if "=" not in o]  # `ded bench rollout verify`
    rows = run_benchmarks(names, quick=args.quick, out_dir=Path(args.out))
    print(markdown_table(rows))
    return 0


def _bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller cases: a smoke run of the suite")
    parser.add_argument("--out", default="bench", help="folder for bench.md and bench.json (default: bench/)")


# name -> (one-line help, handler or None when the step is not built yet, extra-argument adder)
Handler = Callable[[argparse.Namespace, DEDConfig], int]
COMMANDS: dict[str, tuple[str, Handler, Callable[[argparse.ArgumentParser], None] | None]] = {
    "run": ("run the whole DED pipeline (embedded demo when no --config)", _cmd_run, None),
    "smoke-test": ("rank candidate teachers by the student each one produces", commands.cmd_smoke_test, None),
    "rollout": ("generate M teacher samples per question on Ray Data", commands.cmd_rollout, commands.add_rollout),
    "verify": ("check answers (math-verify) and run code tests in a sandbox", commands.cmd_verify, commands.add_verify),
    "curate": ("pass-rate compression, diversity selection, mixing, decontamination", commands.cmd_curate,
               commands.add_curate),
    "train": ("fine-tune the student on a corpus with Ray Train (+ DeepSpeed)", commands.cmd_train, commands.add_train),
    "eval": ("evaluate a model: avg@k pass@1 with standard errors per benchmark", commands.cmd_eval, commands.add_eval),
    "serve": ("host teachers as OpenAI-compatible endpoints on Ray Serve", commands.cmd_serve, commands.add_serve),
    "report": ("write report.html for a run directory", commands.cmd_report, commands.add_report),
    "ablate": ("train on the corpus after each curation step and compare", commands.cmd_ablate, None),
    "bench": ("run stage benchmarks and write a table (markdown + json)", _cmd_bench, _bench_args),
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
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
