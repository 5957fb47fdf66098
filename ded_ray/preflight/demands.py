"""What each model-running stage of a config will ask for: `EngineDemand`s, read from the config alone.

The prompt lengths are the real ones: the problems the config names are read, and each stage's prompts are
built by the prompt stage's own `PromptStage.messages` and rendered with the model's chat template, then
counted with its tokenizer. A model that does not resolve here (a 32B model not downloaded) has no tokenizer:
its prompts are counted as characters / `CHARS_PER_TOKEN`, marked as estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import DEDConfig, SamplingConfig, TeacherConfig
from ded_ray.errors import UserError
from ded_ray.evaluate import in_date_window
from ded_ray.io import read_all_problems, read_problems
from ded_ray.preflight.model_facts import ModelFacts, model_facts

CHARS_PER_TOKEN = 3.0  # low for English prose (~4): an estimate that errs towards "too long"
TOKENIZED_LONGEST = 16  # prompts counted with the tokenizer: the longest by characters


class StageInputError(UserError):
    """A stage's input (its problems, its model) cannot be read; `stage` names it."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class PromptLengths:
    longest: int
    mean: float
    count: int
    estimated: bool  # True: characters / CHARS_PER_TOKEN, no tokenizer here

    def __str__(self) -> str:
        return f"{'~' if self.estimated else ''}{self.longest}"


@dataclass
class EngineDemand:
    stage: str  # "rollout", "pass rate", "eval", "smoke serve"
    model: ModelFacts
    engine: str  # vllm | hf | openai
    gpus: float  # per actor / replica
    cpus: float
    tensor_parallel: int
    replicas: tuple[int, int]
    max_model_len: int | None  # as configured (None = the model's max_position_embeddings)
    max_tokens: int
    prompts: PromptLengths
    dtype: str
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    config_keys: dict[str, str] = field(default_factory=dict)  # what to set, by the name the user writes
    samples: int = 1  # per question

    @property
    def context_needed(self) -> int:
        return self.prompts.longest + self.max_tokens


def facts_for(config: DEDConfig, name: str) -> ModelFacts:
    """`model_facts` looking in the config's models root at its pinned revision."""
    return model_facts(name, config.models.root, config.models.revisions.get(name, "main"))


def problems_of(config: DEDConfig) -> pd.DataFrame:
    problems, _rejected = read_all_problems(config.problems.sources)
    return problems


def engine_name(engine: str, gpus: float) -> str:
    if engine != "auto":
        return engine
    if gpus > 0:
        return "vllm"
    from ded_ray.engines import vllm_usable

    return "vllm" if vllm_usable()[0] else "hf"


def prompt_lengths(problems: pd.DataFrame, facts: ModelFacts, system_prompt: str | None, few_shot,
                   think_prefix: bool) -> PromptLengths:
    """The rendered prompt lengths of `problems` as the prompt stage renders them for this model."""
    from ded_ray.stages.prompt import PromptStage

    if problems.empty:
        return PromptLengths(0, 0.0, 0, False)
    stage = PromptStage(facts.path, system_prompt, few_shot, think_prefix)
    tests = problems[S.TESTS] if S.TESTS in problems else [""] * len(problems)
    meta = problems[S.META] if S.META in problems else [""] * len(problems)
    texts = [stage.render(stage.messages(q, d, t, m))
             for q, d, t, m in zip(problems[S.QUESTION], problems[S.DOMAIN], tests, meta)]
    chars = [len(t) for t in texts]
    if stage.tokenizer is None:
        return PromptLengths(math.ceil(max(chars) / CHARS_PER_TOKEN), sum(chars) / len(chars) / CHARS_PER_TOKEN,
                             len(texts), True)
    longest = sorted(range(len(texts)), key=chars.__getitem__)[-TOKENIZED_LONGEST:]
    counts = [len(stage.tokenizer(texts[i], add_special_tokens=False)["input_ids"]) for i in longest]
    ratio = sum(chars[i] for i in longest) / max(1, sum(counts))  # chars per token, for the mean
    return PromptLengths(max(counts), sum(chars) / len(chars) / ratio, len(texts), False)


def _tp(engine_kwargs: dict) -> int:
    return int(engine_kwargs.get("tensor_parallel_size", 1)) * int(engine_kwargs.get("pipeline_parallel_size", 1))


def _rollout_demand(stage: str, config: DEDConfig, model: str, sampling: SamplingConfig, problems: pd.DataFrame,
                    system_prompt, few_shot, think_prefix: bool, samples: int, sampling_key: str,
                    max_model_len: int | None = None, max_model_len_key: str = "rollout.max_model_len") -> EngineDemand:
    r = config.rollout
    facts = facts_for(config, model)
    return EngineDemand(
        stage, facts, engine_name(r.engine, r.num_gpus_per_actor), r.num_gpus_per_actor, r.num_cpus_per_actor,
        _tp(r.engine_kwargs), tuple(r.concurrency), max_model_len or r.max_model_len, sampling.max_tokens,
        prompt_lengths(problems, facts, system_prompt, few_shot, think_prefix), r.dtype, dict(r.engine_kwargs),
        {"max_model_len": max_model_len_key, "max_tokens": sampling_key, "gpus": "rollout.num_gpus_per_actor",
         "cpus": "rollout.num_cpus_per_actor", "tensor_parallel": "rollout.engine_kwargs.tensor_parallel_size"},
        samples)


def teachers_to_plan(config: DEDConfig, smoke: bool) -> list[TeacherConfig]:
    """Teachers served by us: every candidate for the smoke test, else the fixed teacher."""
    teachers = config.teachers if smoke or config.teacher == "auto" else [config.teacher_config(config.teacher)]
    return [t for t in teachers if t.endpoint is None and t.model]


def pipeline_demands(config: DEDConfig, problems: pd.DataFrame) -> list[EngineDemand]:
    """Rollouts (each teacher that may be chosen), student pass-rate rollouts, and evaluation."""
    demands = []
    for t in teachers_to_plan(config, smoke=False):
        i = [x.name for x in config.teachers].index(t.name)
        demands.append(_rollout_demand(f"rollout {t.name}", config, t.model, t.sampling, problems, t.system_prompt,
                                       t.few_shot, t.think_prefix, config.rollout.samples_per_question,
                                       f"teachers.{i}.sampling.max_tokens"))
    s = config.student
    if config.curate.pass_rate.enabled:
        demands.append(_rollout_demand("pass rate", config, s.model, s.sampling, problems, s.system_prompt,
                                       s.few_shot, False, config.curate.pass_rate.k, "student.sampling.max_tokens"))
    try:
        benchmarks = [in_date_window(read_problems(b.source)[0], b.date_from, b.date_to, b.name)[0]
                      for b in config.eval.benchmarks]
    except UserError as exc:
        raise StageInputError("eval", str(exc)) from None
    if benchmarks:
        sampling = config.eval.sampling or s.sampling
        demands.append(_rollout_demand(
            "eval", config, s.model, sampling, pd.concat(benchmarks, ignore_index=True), s.system_prompt,
            s.few_shot, False, config.eval.k, "eval.sampling.max_tokens" if config.eval.sampling else
            "student.sampling.max_tokens", config.eval.max_model_len, "eval.max_model_len"))
    return demands


def smoke_demands(config: DEDConfig, problems: pd.DataFrame) -> list[EngineDemand]:
    """One Serve deployment per local teacher model of the smoke test."""
    sm = config.smoke
    questions = problems.sort_values(S.PROBLEM_ID).head(sm.questions)
    out = []
    for t in teachers_to_plan(config, smoke=True):
        i = [x.name for x in config.teachers].index(t.name)
        facts = facts_for(config, t.model)
        engine = "hf" if sm.serve_engine == "hf" or sm.serve_api_key_env else engine_name(sm.serve_engine,
                                                                                           sm.serve_gpus_per_replica)
        out.append(EngineDemand(
            f"smoke serve {t.name}", facts, engine, sm.serve_gpus_per_replica, sm.serve_cpus_per_replica,
            _tp(sm.serve_engine_kwargs), tuple(sm.serve_replicas), sm.serve_max_model_len, t.sampling.max_tokens,
            prompt_lengths(questions, facts, t.system_prompt, t.few_shot, t.think_prefix), "auto",
            dict(sm.serve_engine_kwargs),
            {"max_model_len": "smoke.serve_max_model_len", "max_tokens": f"teachers.{i}.sampling.max_tokens",
             "gpus": "smoke.serve_gpus_per_replica", "cpus": "smoke.serve_cpus_per_replica",
             "tensor_parallel": "smoke.serve_engine_kwargs.tensor_parallel_size"}))
    return out
