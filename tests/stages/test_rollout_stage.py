"""rollout(): fan-out → prompt → engine on Ray Data; engine registry; resume by skip_ids."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import RolloutConfig, SamplingConfig, StudentConfig, TeacherConfig
from ded_ray.engines import get_engine, resolve_engine_name
from ded_ray.engines.base import PROMPT_MESSAGES
from ded_ray.engines.hf import HFEngine
from ded_ray.generated import generate_problems
from ded_ray.models import build_tiny_model
from ded_ray.stages.rollout import rollout, student_target

# Nearly flat distribution of a random-init model: top_p = 1 avoids sorting the vocabulary each step.
TINY_SAMPLING = SamplingConfig(max_tokens=4, top_p=1.0)


def test_engine_registry_resolves_auto_and_rejects_unknown_names():
    assert isinstance(get_engine("hf"), HFEngine)
    assert resolve_engine_name("auto", endpoint="http://127.0.0.1:8000/v1") == "openai"
    assert resolve_engine_name("auto") in {"vllm", "hf"}
    assert resolve_engine_name("hf", endpoint="http://x/v1") == "hf"  # an explicit choice is kept
    with pytest.raises(ValueError, match="unknown rollout engine 'tgi'"):
        resolve_engine_name("tgi")


def test_student_target_carries_the_student_prompt_and_sampling():
    student = StudentConfig(model="smollm2-135m", system_prompt="S", sampling=SamplingConfig(temperature=0.6))
    target = student_target(student, sampling=SamplingConfig(max_tokens=7))
    assert (target.name, target.model, target.system_prompt) == ("student", "smollm2-135m", "S")
    assert target.sampling.max_tokens == 7


def test_bad_targets_are_named():
    config = RolloutConfig(engine="hf")
    with pytest.raises(ValueError, match="at least one teacher"):
        rollout([], [], config)
    twice = [TeacherConfig(name="a", model="x"), TeacherConfig(name="a", model="y")]
    with pytest.raises(ValueError, match="unique names"):
        rollout([], twice, config)


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(build_tiny_model())


def _problems() -> pd.DataFrame:
    problems = pd.DataFrame(generate_problems(["add_1digit", "mul_1digit"], 3, seed=0))
    # One question too long for the tiny model's 2048 positions: it must come back as an error row.
    problems.loc[0, S.QUESTION] = "What is " + " plus ".join(["1"] * 1200) + "?"
    return problems


@pytest.mark.engine
def test_two_prompt_teachers_one_model_one_pass_with_error_rows(tiny, ray_local):
    teachers = [
        TeacherConfig(name="terse", model=tiny, system_prompt="Answer tersely.", sampling=TINY_SAMPLING),
        TeacherConfig(name="steps", model=tiny, system_prompt="Think in steps.", sampling=TINY_SAMPLING),
    ]
    config = RolloutConfig(engine="hf", samples_per_question=2, batch_size=4, dtype="float32")
    problems = _problems()
    out = rollout(problems, teachers, config, base_seed=3).to_pandas()

    assert len(out) == len(problems) * 2 * 2 == 24  # problems x teachers x samples
    assert out[S.ROLLOUT_ID].is_unique and out[S.SEED].is_unique
    for row in out.itertuples():
        system = {"terse": "Answer tersely.", "steps": "Think in steps."}[row.teacher]
        assert f"<|im_start|>system\n{system}<|im_end|>" in row.prompt
        assert json.loads(getattr(row, PROMPT_MESSAGES))[0] == {"role": "system", "content": system}
    long_rows = out[S.PROBLEM_ID] == problems.loc[0, S.PROBLEM_ID]
    assert (out.loc[long_rows, S.ERROR] == "prompt_too_long").all() and long_rows.sum() == 4
    assert out.loc[~long_rows, S.ERROR].isna().all()
    assert out.loc[~long_rows, S.NUM_TOKENS].between(1, 4).all()


@pytest.mark.engine
def test_a_restarted_run_generates_only_the_missing_rows(tiny, ray_local):
    teacher = TeacherConfig(name="t", model=tiny, sampling=TINY_SAMPLING)
    config = RolloutConfig(engine="hf", samples_per_question=3, batch_size=6, dtype="float32")
    problems = _problems().iloc[1:]  # 5 questions x 3 samples
    first = rollout(problems, [teacher], config, base_seed=0).to_pandas()
    assert len(first) == 15
    done = set(first[S.ROLLOUT_ID].iloc[:9])  # "written before the crash"
    resumed = rollout(problems, [teacher], config, base_seed=0, skip_ids=done).to_pandas()
    assert set(resumed[S.ROLLOUT_ID]) == set(first[S.ROLLOUT_ID]) - done and len(resumed) == 6
    # The resumed rows carry the seeds the uninterrupted run gave them.
    seeds = first.set_index(S.ROLLOUT_ID)[S.SEED]
    assert (resumed.set_index(S.ROLLOUT_ID)[S.SEED] == seeds.loc[resumed[S.ROLLOUT_ID]]).all()
