"""One prompt from rollout to corpus: the student is trained on exactly the prompt it is evaluated with.

Real problems of each kind (MATH-500; LiveCodeBench stdin and functional, Codeforces, LeetCode and HumanEval
rows, each read through its format preset) go through the prompt stage as the rollouts do. The corpus rows
built from them must carry the same user turn (starter code and I/O instructions included), the same whole
chat when teacher and student are prompted alike, and tokenise (SFT) to the very prompt ids the student's
evaluation rollouts are given."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import ProblemSource
from ded_ray.engines.base import PROMPT_MESSAGES
from ded_ray.io import read_problems
from ded_ray.models import resolve_model
from ded_ray.stages.prompt import PromptStage
from ded_ray.stages.to_sft import build_corpus
from ded_ray.train.tokenize import IGNORE_INDEX, tokenize_chat

STUDENT_SYSTEM = {"math": "Reason step by step; end with \\boxed{answer}.", "code": "Write correct Python."}
TEACHER_FEW_SHOT = {
    "math": [{"user": "What is 2 + 3?", "assistant": "2 + 3 = 5. \\boxed{5}"}],
    "code": [{"user": "Write `inc(n)`.", "assistant": "```python\ndef inc(n):\n    return n + 1\n```"}],
}


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _source(path: Path, **fields) -> pd.DataFrame:
    problems, rejected = read_problems(ProblemSource(path=str(path), **fields))
    assert len(problems) > 0, rejected.head()
    return problems


def _first_of_type(problems: pd.DataFrame, kind: str) -> pd.Series:
    return problems[problems[S.TESTS].map(lambda t: json.loads(t)[0]["type"]) == kind].iloc[0]


@pytest.fixture(scope="module")
def problems(shared_data) -> dict[str, pd.Series]:
    """One real problem of each kind the prompt builder tells apart, read through each format preset."""
    lcb = _source(FIXTURES / "presets" / "livecodebench.jsonl", format="livecodebench")
    return {
        "math": _source(shared_data / "math500" / "math500.jsonl", limit=1).iloc[0],
        "livecodebench-stdin": _first_of_type(lcb, "stdin"),
        "livecodebench-functional": _first_of_type(lcb, "functional"),
        "codeforces": _source(FIXTURES / "prepare" / "codeforces" / "data", format="codeforces").iloc[0],
        "leetcode": _source(FIXTURES / "presets" / "leetcode.json", format="leetcode").iloc[0],
        "humaneval": _source(FIXTURES / "presets" / "humaneval.jsonl", format="humaneval").iloc[0],
    }


@pytest.fixture(scope="module")
def stages():
    model = str(resolve_model("smollm2-135m"))
    teacher = PromptStage(model, system_prompt="You are a careful teacher.", few_shot=TEACHER_FEW_SHOT)
    student = PromptStage(model, system_prompt=STUDENT_SYSTEM)
    return teacher, student


def _corpus_row(prompted: pd.DataFrame) -> dict:
    rows = prompted.assign(**{S.RESPONSE: "The answer.", S.TEACHER: "t"})
    return build_corpus(rows, STUDENT_SYSTEM).iloc[0]


@pytest.mark.parametrize("kind", ["math", "livecodebench-stdin", "livecodebench-functional", "codeforces", "leetcode",
                                  "humaneval"])
def test_corpus_prompt_is_the_rollout_prompt_and_the_eval_prompt(problems, stages, kind):
    teacher, student = stages
    problem = pd.DataFrame([problems[kind]])

    # the teacher's rollout: its own system prompt and worked example, then the problem as the student sees it
    teacher_chat = json.loads(teacher(problem)[PROMPT_MESSAGES].iloc[0])
    corpus_chat = list(_corpus_row(teacher(problem))[S.MESSAGES])
    assert corpus_chat[-1]["role"] == "assistant"
    assert corpus_chat[-2] == teacher_chat[-1]  # the same user turn, starter code and instructions included
    assert len(teacher_chat) == 4 and teacher_chat[1]["content"] == TEACHER_FEW_SHOT[problems[kind][S.DOMAIN]][0]["user"]
    if kind != "math":
        assert "```python" in corpus_chat[-2]["content"] or "standard input" in corpus_chat[-2]["content"]

    # a teacher prompted like the student: the corpus row's prompt is exactly the messages the engine was given
    student_prompted = student(problem)
    assert corpus_chat[:-1] == json.loads(student_prompted[PROMPT_MESSAGES].iloc[0])

    # SFT prompt tokens = the student's evaluation prompt tokens (tokenised as engines.hf does)
    eval_ids = student.tokenizer(student_prompted[S.PROMPT].iloc[0], add_special_tokens=False)["input_ids"]
    sft = tokenize_chat(student.tokenizer, corpus_chat, max_seq_len=8192)
    assert sft.reject_reason is None
    n_prompt = next(i for i, label in enumerate(sft.labels) if label != IGNORE_INDEX)
    assert list(sft.input_ids[:n_prompt]) == eval_ids


def test_starter_code_reaches_the_corpus(problems, stages):
    """The bug this file exists for: a functional problem's signature was missing from the training prompt."""
    _, student = stages
    problem = problems["livecodebench-functional"]
    starter = json.loads(problem[S.META])["starter_code"].strip()
    user = list(_corpus_row(student(pd.DataFrame([problem])))[S.MESSAGES])[-2]["content"]
    assert starter in user and user.startswith(problem[S.QUESTION].rstrip())


def test_a_question_that_is_its_starter_code_shows_it_once(problems, stages):
    """HumanEval's question is the signature and docstring: the instructions do not paste it again."""
    _, student = stages
    problem = problems["humaneval"]
    user = json.loads(student(pd.DataFrame([problem]))[PROMPT_MESSAGES].iloc[0])[-1]["content"]
    assert user.count(problem[S.QUESTION].strip()) == 1 and "return the result" in user
