"""Prompt stage: the model's own chat template, system prompt, few-shot, code instructions, think prefix."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import FewShotExample
from ded_ray.engines.base import PROMPT_MESSAGES
from ded_ray.generated import generate_problems
from ded_ray.models import resolve_model
from ded_ray.stages.base import StageError
from ded_ray.stages.prompt import STDIN_INSTRUCTIONS, PromptStage, add_prompts, code_instructions

SYSTEM = "Reason briefly, step by step, and put the final answer in \\boxed{}."
EXAMPLE = FewShotExample(user="What is 2 + 3?", assistant="2 + 3 = 5. The answer is \\boxed{5}.")


@pytest.fixture(scope="module")
def smollm2() -> str:
    return str(resolve_model("smollm2-135m"))


@pytest.fixture
def problems() -> pd.DataFrame:
    return pd.DataFrame(generate_problems(["mul_1digit"], 3, seed=0))


def test_system_prompt_and_worked_example_precede_the_question(smollm2, problems):
    out = PromptStage(smollm2, SYSTEM, [EXAMPLE])(problems)
    for question, prompt in zip(problems[S.QUESTION], out[S.PROMPT]):
        # SmolLM2's ChatML template, our system prompt instead of its default one, then the example pair.
        assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
        assert "You are a helpful AI assistant named SmolLM" not in prompt
        i_ex_user = prompt.index(f"<|im_start|>user\n{EXAMPLE.user}<|im_end|>")
        i_ex_answer = prompt.index(f"<|im_start|>assistant\n{EXAMPLE.assistant}<|im_end|>")
        i_question = prompt.index(f"<|im_start|>user\n{question}<|im_end|>")
        assert i_ex_user < i_ex_answer < i_question
        assert prompt.endswith("<|im_start|>assistant\n")  # add_generation_prompt=True


def test_prompt_messages_are_the_same_chat_as_json(smollm2, problems):
    out = PromptStage(smollm2, SYSTEM, [{"user": "Q1", "assistant": "A1"}])(problems)
    chat = json.loads(out[PROMPT_MESSAGES].iloc[0])
    assert chat == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": problems[S.QUESTION].iloc[0]},
    ]
    assert out[S.PROBLEM_ID].tolist() == problems[S.PROBLEM_ID].tolist()  # rows and order kept


def test_without_system_prompt_the_template_default_applies_and_think_prefix_is_appended(smollm2, problems):
    out = PromptStage(smollm2, think_prefix=True)(problems)
    prompt = out[S.PROMPT].iloc[0]
    assert "named SmolLM" in prompt  # the model's own default system turn
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert [m["role"] for m in json.loads(out[PROMPT_MESSAGES].iloc[0])] == ["user"]


def test_code_problems_get_io_instructions_and_starter_code(smollm2):
    rows = pd.DataFrame([
        {S.PROBLEM_ID: "c1", S.DOMAIN: "code", S.QUESTION: "Print the sum of two integers.",
         S.TESTS: json.dumps([{"type": "stdin", "input": "1 2\n", "output": "3\n"}]), S.META: "{}"},
        {S.PROBLEM_ID: "c2", S.DOMAIN: "code", S.QUESTION: "Return the sum of nums.",
         S.TESTS: json.dumps([{"type": "functional", "fn_name": "total", "input": "[1, 2]", "output": "3"}]),
         S.META: json.dumps({"starter_code": "class Solution:\n    def total(self, nums: list[int]) -> int:"})},
        {S.PROBLEM_ID: "c3", S.DOMAIN: "code", S.QUESTION: "def add(a, b):\n    \"\"\"Add.\"\"\"\n",
         S.TESTS: json.dumps([{"type": "assert", "code": "def check(c): assert c(1, 2) == 3", "entry_point": "add"}]),
         S.META: ""},
    ])
    out = PromptStage(smollm2)(rows)
    stdin, functional, asserted = (json.loads(m)[-1]["content"] for m in out[PROMPT_MESSAGES])
    assert stdin.startswith("Print the sum of two integers.") and STDIN_INSTRUCTIONS in stdin
    assert "class Solution:\n    def total(self, nums: list[int]) -> int:" in functional
    assert "standard input" not in functional and "call the function directly" in functional
    assert "`add`" in asserted and "standard input" not in asserted
    assert "standard input" in out[S.PROMPT].iloc[0]  # also in the rendered text


def test_code_instructions_reject_broken_json():
    with pytest.raises(StageError, match="tests column is not valid JSON"):
        code_instructions("[{oops", "")


def test_no_local_model_renders_a_plain_transcript(problems):
    out = PromptStage(None, SYSTEM)(problems)
    assert out[S.PROMPT].iloc[0] == f"system: {SYSTEM}\nuser: {problems[S.QUESTION].iloc[0]}\nassistant: "


def test_missing_columns_are_named(smollm2):
    with pytest.raises(StageError, match="'prompt' needs columns"):
        PromptStage(smollm2)(pd.DataFrame({S.QUESTION: ["x"]}))


def test_through_ray_data(smollm2, problems, ray_local):
    import ray.data

    ds = add_prompts(ray.data.from_pandas(problems), smollm2, SYSTEM, [EXAMPLE])
    out = ds.to_pandas().sort_values(S.PROBLEM_ID)
    expected = PromptStage(smollm2, SYSTEM, [EXAMPLE])(problems).sort_values(S.PROBLEM_ID)
    assert out[S.PROMPT].tolist() == expected[S.PROMPT].tolist()
