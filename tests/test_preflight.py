"""`ded plan`: the paper's config against the shipped cluster.yaml fits, and each way of breaking it is refused
with its reason and the key that fixes it — before any model or GPU is touched.

The problems are real files in their own formats (MATH-500 as the math source, open-r1 Codeforces rows for code;
AIME, MATH-500 and official LiveCodeBench rows as eval sets); the 32B models are not downloaded here, so their published config.json shapes are used
and their prompts counted as estimated tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ded_ray.cli import main
from ded_ray.config import load_config
from ded_ray.preflight import PlanError, machines_for, plan_run, require_fit
from ded_ray.preflight.demands import prompt_lengths
from ded_ray.preflight.machines import from_cluster_yaml
from ded_ray.preflight.model_facts import model_facts

CLUSTER = "cluster.yaml"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def data_overrides(shared_data) -> list[str]:
    d = shared_data
    return [
        f"problems.sources.0={{name: s1k, path: '{d}/math500/math500.jsonl', domain: math, limit: 200}}",
        # the official formats, through their presets (tests/fixtures: open-r1 Codeforces, LiveCodeBench's release)
        f"problems.sources.1={{name: codeforces, path: '{FIXTURES}/prepare/codeforces/data', format: codeforces}}",
        f"curate.decontaminate.eval_sets=[{{name: aime2024, path: '{d}/aime2024/aime2024.jsonl'}}]",
        f"eval.benchmarks=[{{name: aime2024, source: {{name: aime2024, path: '{d}/aime2024/aime2024.jsonl'}}}}, "
        f"{{name: math500, source: {{name: math500, path: '{d}/math500/math500.jsonl'}}}}, "
        f"{{name: lcb, source: {{name: lcb, path: '{FIXTURES}/presets/livecodebench.jsonl', format: livecodebench}}, "
        "date_from: '2024-08-01', date_to: '2024-10-31'}]",
    ]


@pytest.fixture(scope="module")
def cluster():
    return from_cluster_yaml(CLUSTER)


def plan_of(data_overrides, cluster, *overrides: str):
    return plan_run(load_config("ded-32b", [*data_overrides, *overrides]), cluster, smoke=True)


def test_the_paper_config_fits_the_shipped_cluster(data_overrides, cluster):
    plan = plan_of(data_overrides, cluster)
    assert plan.problems == [], plan.render()
    stages = {f.stage for f in plan.findings}
    assert {"problems", "rollout QwQ-32B", "pass rate", "eval", "smoke serve QwQ-32B", "smoke serve Qwen3-32B",
            "train", "smoke train", "smoke diagnostics"} <= stages
    text = plan.render()
    assert "on gpu-rollout" in text and "on one gpu-train" in text  # the node types that host them
    assert "KV cache (2 x 80 GiB GPU at 0.9)" in text and "memory plan" in text and "GPU-h" in text
    assert "fits: every check passed" in text


@pytest.mark.parametrize("overrides, stage, reason, fix", [
    # evaluation silently capped: 32k new tokens in the rollouts' 20k context
    (["eval.max_model_len=null"], "eval", "generations would be cut off", "eval.max_model_len="),
    # the teachers served on CPU bundles: a 1 GiB KV cache holds 2k tokens of a 32B model
    (["smoke.serve_gpus_per_replica=0"], "smoke serve QwQ-32B", "not one sequence", "smoke.serve_gpus_per_replica"),
    (["rollout.max_model_len=8192"], "rollout QwQ-32B", "generations would be cut off", "rollout.max_model_len=17408"),
    (["rollout.max_model_len=65536"], "rollout QwQ-32B", "exceeds Qwen/QwQ-32B's max_position_embeddings 40960",
     "rollout.max_model_len=40960"),
    # 61 GiB of weights on one GPU at half its memory
    (["rollout.num_gpus_per_actor=1", "rollout.engine_kwargs={tensor_parallel_size: 1, gpu_memory_utilization: 0.5}"],
     "rollout QwQ-32B", "do not fit 1 x 80 GiB", "tensor_parallel_size=2"),
    (["rollout.num_gpus_per_actor=4"], "rollout QwQ-32B", "4 GPUs per replica but tensor_parallel_size",
     "rollout.num_gpus_per_actor=2"),
    # full fine-tuning of 32B parameters replicated on every GPU (DDP)
    (["train.strategy=ddp", "train.offload_optimizer=false"], "train", "memory plan", "train.zero_stage=3"),
    (["run.root=/mnt/runs", "train.keep_checkpoints=5"], "train", "disk (2000 GiB)", "run.root=s3://"),
    (["smoke.diagnostics.gpus=0"], "smoke diagnostics", "fp32", "smoke.diagnostics.gpus=1"),
    (["rollout.num_gpus_per_actor=16", "rollout.engine_kwargs={tensor_parallel_size: 16}"], "rollout QwQ-32B",
     "no node of cluster config cluster.yaml has", "rollout.num_gpus_per_actor"),
    # a LiveCodeBench-style date window on a benchmark whose problems carry no contest date
    (["eval.benchmarks.1.date_from=2024-01-01"], "eval", "'math500' has a date window but 500 problems", ""),
])
def test_a_broken_variant_is_refused_with_its_reason_and_fix(data_overrides, cluster, overrides, stage, reason, fix):
    failing = plan_of(data_overrides, cluster, *overrides).problems
    assert any(f.stage == stage and reason in f.text and fix in (f.fix or "") for f in failing), \
        "\n".join(map(str, failing)) or "nothing refused"


def test_a_missing_problems_file_names_ded_prepare(cluster):
    failing = plan_run(load_config("ded-32b"), cluster).problems
    assert failing[0].stage == "problems" and "data/s1k.jsonl" in failing[0].text
    assert "ded prepare" in failing[0].fix


def test_require_fit_raises_with_every_reason(data_overrides, cluster):
    config = load_config("ded-32b", [*data_overrides, "eval.max_model_len=null", "rollout.max_model_len=8192"])
    with pytest.raises(PlanError) as caught:
        require_fit(config, cluster)
    message = str(caught.value)
    assert "[eval]" in message and "[rollout QwQ-32B]" in message and "--skip-plan" in message


def test_prompts_are_counted_with_the_models_own_template_when_it_is_here():
    """The built-in SmolLM2 resolves here: its prompts are rendered and tokenized, not estimated."""
    from transformers import AutoTokenizer

    from ded_ray.io import read_problems
    from ded_ray.stages.prompt import PromptStage

    config = load_config()
    problems, _ = read_problems(config.problems.sources[0])
    facts = model_facts(config.student.model)
    lengths = prompt_lengths(problems, facts, config.student.system_prompt, config.student.few_shot, False)
    stage = PromptStage(facts.path, config.student.system_prompt, config.student.few_shot)
    tokenizer = AutoTokenizer.from_pretrained(facts.path)
    true_longest = max(len(tokenizer(stage.render(stage.messages(q)), add_special_tokens=False)["input_ids"])
                       for q in problems["question"])
    assert not lengths.estimated and lengths.longest == true_longest and lengths.count == len(problems)
    estimated = prompt_lengths(problems, model_facts("Qwen/QwQ-32B"), None, (), True)
    assert estimated.estimated and str(estimated).startswith("~")


def test_cluster_yaml_node_types(cluster):
    nodes = {n.name: n for n in cluster.nodes}
    assert nodes["gpu-train"].gpus == 8 and nodes["gpu-train"].gpu_memory_gib == 80 and nodes["gpu-train"].disk_gib == 2000
    assert nodes["head"].cpus == 0 and nodes["head"].max_workers == 1
    assert cluster.total_gpus == 8 * (2 + 1)


def test_ded_plan_cli_exit_status(data_overrides, capsys):
    assert main(["plan", "--config", "ded-32b", "--cluster", CLUSTER, *data_overrides]) == 0
    assert "fits: every check passed" in capsys.readouterr().out
    assert main(["plan", "--config", "ded-32b", "--cluster", CLUSTER, *data_overrides, "eval.max_model_len=null"]) == 1
    assert "1 problem(s)" in capsys.readouterr().out


def test_the_demo_fits_this_machine():
    config = load_config()
    plan = plan_run(config, machines_for(address="local"))
    assert plan.problems == [], plan.render()
    assert any(f.stage == "smoke serve step-1shot" for f in plan.findings)  # teacher: auto plans the smoke test


def test_engine_actors_that_hold_every_cpu_are_refused_before_they_stall():
    """vllm with both CPUs of a 2-CPU local Ray never scheduled its own tokenize tasks: the stage hung."""
    from ded_ray.preflight.machines import this_machine

    two_cpus = this_machine(num_cpus=2)
    assert plan_run(load_config(), two_cpus).problems == []  # the demo's one-CPU actors leave one
    failing = plan_run(load_config(overrides=["rollout.num_cpus_per_actor=2"]), two_cpus).problems
    assert {f.stage for f in failing} >= {"rollout step-1shot", "pass rate", "eval"}
    assert all("leave no CPU" in f.text and f.fix.startswith("rollout.num_cpus_per_actor<=1") for f in failing)


def test_ded_run_checks_the_plan_before_starting_anything(tmp_path, capsys):
    """A demo whose rollouts cannot fit their context stops before Ray starts or the run directory exists."""
    assert main(["run", f"run.root={tmp_path}", "run.name=broken", "rollout.max_model_len=64"]) == 1
    err = capsys.readouterr().err
    assert "ded run: ded plan: this run would fail" in err and "rollout.max_model_len" in err
    assert not (tmp_path / "broken").exists()
