"""`ded plan`: what a config will ask of the machines, stage by stage, and whether it fits — before any model
starts or any GPU hour is spent.

`plan_run(config, machines)` reads the config's problems and models' config.json (or their published shapes),
applies the rules of `checks` to every model-running stage — rollouts, student pass-rate rollouts, evaluation,
the smoke test's Serve replicas and diagnostics, training and the smoke SFTs — and adds a time and GPU-hour
estimate (`estimate`). `ded run`, `ded smoke-test` and the job entry points call `require_fit` first: a plan with
a failing finding stops the run with every reason and its fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import DEDConfig
from ded_ray.errors import UserError
from ded_ray.preflight import checks, estimate
from ded_ray.preflight.checks import Finding
from ded_ray.preflight.demands import StageInputError, facts_for, pipeline_demands, problems_of, smoke_demands, teachers_to_plan
from ded_ray.preflight.machines import Machines, from_cluster_yaml, from_live_cluster, this_machine

__all__ = ["Plan", "PlanError", "machines_for", "plan_run", "require_fit"]


class PlanError(UserError):
    """The run cannot work on these machines; the message lists every reason with its fix."""


@dataclass
class Plan:
    where: str
    findings: list[Finding] = field(default_factory=list)
    estimates: list[estimate.StageEstimate] = field(default_factory=list)
    assumptions: str = ""

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def render(self) -> str:
        lines = [f"ded plan against {self.where}", ""]
        lines += [str(f) for f in self.findings]
        if self.estimates:
            lines += ["", "estimate (upper bounds):"] + [f"  {e}" for e in self.estimates]
            total_h = sum(e.hours for e in self.estimates)
            total_gpu = sum(e.gpu_hours for e in self.estimates)
            lines += [f"  {'total':<28} {'':>15} {estimate.hours_text(total_h):>8} {total_gpu:9.1f} GPU-h",
                      f"  {self.assumptions}"]
        verdict = (f"{len(self.problems)} problem(s): the run would fail; fix them or pass --skip-plan"
                   if self.problems else "fits: every check passed")
        return "\n".join(lines + ["", verdict])


AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml").expanduser()  # written on the head by `ray up`


def machines_for(cluster: str | None = None, address: str | None = None, num_cpus: int | None = None) -> Machines:
    """A cluster config's node types; for a cluster address, the autoscaler's own config when this is its head
    (what it can launch: GPU groups scale from 0), else the nodes alive now; else this machine."""
    if cluster:
        return from_cluster_yaml(cluster)
    if address and address != "local":
        if AUTOSCALER_CONFIG.exists() and not address.startswith("ray://"):
            return from_cluster_yaml(AUTOSCALER_CONFIG)
        return from_live_cluster(address)
    return this_machine(num_cpus)


def plan_run(config: DEDConfig, machines: Machines, smoke: bool | None = None, pipeline: bool = True) -> Plan:
    """Every finding and estimate for the stages that will run: the pipeline's, and the smoke test's when
    `smoke` (None: when the config picks its teacher by smoke test, `teacher: auto`)."""
    smoke = config.teacher == "auto" if smoke is None else smoke
    plan = Plan(machines.where, assumptions=estimate.assumptions(config))
    try:
        problems = problems_of(config)
    except UserError as exc:
        plan.findings.append(Finding("problems", False, str(exc), "create the file (`ded prepare NAME` writes the "
                                     "shipped configs' data files) or point problems.sources at yours"))
        problems = pd.DataFrame(columns=S.PROBLEM_SCHEMA.names)
    else:
        plan.findings.append(Finding("problems", True, f"{len(problems)} questions from "
                                     f"{len(config.problems.sources)} source(s)"))
    try:
        demands = (pipeline_demands(config, problems) if pipeline else []) + (smoke_demands(config, problems) if smoke else [])
        student = facts_for(config, config.student.model)
    except StageInputError as exc:
        plan.findings.append(Finding(exc.stage, False, str(exc), "create the file (`ded prepare NAME`) or point "
                                     "the benchmark's source at yours"))
        return plan
    except (UserError, ValueError) as exc:
        plan.findings.append(Finding("models", False, str(exc), "`ded fetch --config C` downloads the config's models"))
        return plan
    for d in demands:
        plan.findings += checks.engine_findings(d, machines, config)
    n = len(problems)
    prompt_mean = next((d.prompts.mean for d in demands if d.stage.startswith("rollout")), 0.0)
    if pipeline:
        plan.findings += checks.train_findings("train", config.train, student, machines, config.run.root)
        plan.estimates += [estimate.engine_estimate(d, config, d.prompts.count if d.stage == "eval" else n,
                                                    models=2 if d.stage == "eval" else 1) for d in demands
                           if not d.stage.startswith("smoke")]
        response = max((t.sampling.max_tokens for t in teachers_to_plan(config, smoke=False)), default=0)
        plan.estimates.append(estimate.train_estimate("train", config, estimate.corpus_rows(config, n), prompt_mean,
                                                      response, config.train.epochs))
    if smoke:
        smoke_train = config.smoke.train or config.train.model_copy(update={"epochs": config.smoke.epochs})
        plan.findings += checks.train_findings("smoke train", smoke_train, student, machines, config.run.root,
                                               " (deleted once the arm is scored)" if not config.smoke.keep_students else "")
        plan.findings += checks.diagnostics_findings(config, student, machines)
        questions = min(n, config.smoke.questions)
        for d in demands:
            if d.stage.startswith("smoke"):
                plan.estimates.append(estimate.engine_estimate(d, config, questions))
                plan.estimates.append(estimate.train_estimate(d.stage.replace("serve", "train"), config, questions,
                                                              d.prompts.mean, d.max_tokens, smoke_train.epochs))
    return plan


def require_fit(config: DEDConfig, machines: Machines | None = None, smoke: bool | None = None,
                pipeline: bool = True) -> Plan:
    """`plan_run`, raising PlanError with every failing finding; returns the plan when it fits."""
    plan = plan_run(config, machines or machines_for(address=config.ray.address, num_cpus=config.ray.num_cpus),
                    smoke=smoke, pipeline=pipeline)
    if plan.problems:
        raise PlanError("ded plan: this run would fail on " + plan.where + ":\n" +
                        "\n".join(str(f) for f in plan.problems) +
                        "\n(`ded plan` shows the whole plan; --skip-plan skips these checks: context lengths, "
                        "GPU placement, KV cache, training memory, disk)")
    return plan
