"""Prompt stage: render each row's chat with the model's own chat template.

The chat is: an optional system prompt (the teacher's), optional few-shot user/assistant pairs (one worked
example ending in `\\boxed{}` is what makes SmolLM2 box its answers, MEASURED.md), then the question. For
code problems the user turn also carries the starter code and how the program is run (stdin/stdout, a
function to complete, or a `class Solution` method), inferred from the row's tests and `meta`.

One builder makes every chat: `problem_chat` serves the teachers' rollouts, the student's pass-rate and
evaluation rollouts, and the corpus row (`to_sft.build_corpus`, with the student's settings), so the student
is trained on exactly the prompt it is evaluated with, starter code and I/O instructions included.
`system_prompt` and `few_shot` may be given per domain (`{math: ..., code: ...}`; the key `"*"` is any
other domain): a worked arithmetic example does not help a code question.

Writes `prompt` (the chat rendered with `tokenizer.apply_chat_template(..., add_generation_prompt=True)`,
plus "<think>\\n" when `think_prefix`) and `prompt_messages` (the same chat as a JSON list of
{role, content}, for engines that send messages: the openai engine; the think prefix cannot be expressed
there and is left to the served model's own template).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pandas as pd

from ded_ray import schema as S
from ded_ray.engines.base import PROMPT_MESSAGES
from ded_ray.stages.base import Stage, StageError
from ded_ray.stages.fanout import LIGHT_TASK_CPUS

THINK_PREFIX = "<think>\n"

# Instructions appended to a code question, by how the tests run the program. Our own wording.
STDIN_INSTRUCTIONS = (
    "Write a complete Python program that reads the input from standard input and prints the answer to "
    "standard output. Put the whole program in a single ```python code block."
)
CALLED_INSTRUCTIONS = (
    "The tests call the function directly: return the result, do not read input or print it. Put the "
    "whole solution in a single ```python code block."
)


ANY_DOMAIN = "*"  # the per-domain key for every domain not named


def _few_shot_dicts(few_shot: Sequence[Any]) -> list[dict[str, str]]:
    """FewShotExample models or {user, assistant} dicts → plain dicts (picklable, order kept)."""
    out = []
    for i, ex in enumerate(few_shot or ()):
        data = ex.model_dump() if hasattr(ex, "model_dump") else dict(ex)
        if set(data) != {"user", "assistant"}:
            raise StageError(f"stage 'prompt': few-shot example {i} must have keys user and assistant, got {sorted(data)}")
        out.append({"user": str(data["user"]), "assistant": str(data["assistant"])})
    return out


def few_shot_by_domain(few_shot: Sequence[Any] | Mapping[str, Sequence[Any]] | None) -> dict[str, list[dict]]:
    """A few-shot list (every domain) or {domain: list} → {domain or "*": [{user, assistant}, ...]}."""
    if isinstance(few_shot, Mapping):
        return {str(domain): _few_shot_dicts(examples) for domain, examples in few_shot.items()}
    return {ANY_DOMAIN: _few_shot_dicts(few_shot or ())}


def for_domain(value: Any, domain: str) -> Any:
    """A per-domain setting's value for `domain` (a plain value applies to every domain)."""
    if isinstance(value, Mapping):
        return value.get(domain, value.get(ANY_DOMAIN))
    return value


def user_turn(question: str, domain: str = "math", tests: Any = "", meta: Any = "") -> str:
    """What the model is asked: the question, and for code the starter code and how the program is run."""
    text = str(question)
    if domain == "code":
        text = f"{text.rstrip()}\n\n{code_instructions(tests, meta, shown=text)}"
    return text


def problem_chat(question: str, domain: str = "math", tests: Any = "", meta: Any = "",
                 system_prompt: str | Mapping[str, str] | None = None,
                 few_shot: Sequence[Any] | Mapping[str, Sequence[Any]] = ()) -> list[dict[str, str]]:
    """The chat for one problem: system?, the domain's few-shot pairs, then `user_turn`."""
    chat: list[dict[str, str]] = []
    system = for_domain(system_prompt, domain)
    if system:
        chat.append({"role": "system", "content": str(system)})
    for ex in for_domain(few_shot_by_domain(few_shot), domain) or ():
        chat.append({"role": "user", "content": ex["user"]})
        chat.append({"role": "assistant", "content": ex["assistant"]})
    chat.append({"role": "user", "content": user_turn(question, domain, tests, meta)})
    return chat


def _json_or_empty(text: Any, what: str) -> Any:
    if text is None or (isinstance(text, float) and pd.isna(text)) or text == "":
        return None
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StageError(f"stage 'prompt': the {what} column is not valid JSON ({exc}): {text[:80]!r}") from None


def code_instructions(tests_json: Any, meta_json: Any, shown: str = "") -> str:
    """The text appended to a code question: I/O format and, when given, the starter code.

    The format comes from the test types (`schema.TESTS`, DESIGN.md): any `functional` test → the
    function is called (LeetCode style, starter code from `meta.starter_code` or the test's `fn_name`);
    `assert` tests → a function to complete (HumanEval style, `entry_point`); otherwise stdin/stdout.
    Starter code already in `shown` (a HumanEval question is its signature and docstring) is not repeated.
    """
    tests = _json_or_empty(tests_json, "tests") or []
    meta = _json_or_empty(meta_json, "meta") or {}
    if isinstance(tests, dict):  # a single test object
        tests = [tests]
    kinds = {t.get("type") for t in tests if isinstance(t, dict)}
    starter = (meta.get("starter_code") or "").strip() if isinstance(meta, dict) else ""
    if starter and starter in shown:
        starter = ""
    fn_name = next((t.get("fn_name") or t.get("entry_point") for t in tests
                    if isinstance(t, dict) and (t.get("fn_name") or t.get("entry_point"))), None)
    if "functional" in kinds or "assert" in kinds:
        if starter:
            return f"Complete the starter code below. {CALLED_INSTRUCTIONS}\n```python\n{starter}\n```"
        target = f"the function `{fn_name}`" if fn_name else "the function"
        return f"Write {target}. {CALLED_INSTRUCTIONS}"
    if starter:
        return f"{STDIN_INSTRUCTIONS}\n```python\n{starter}\n```"
    return STDIN_INSTRUCTIONS


class PromptStage(Stage):
    """Render `prompt` and `prompt_messages` for each row; the same prompt settings for every row.

    `model_path`: a local model folder whose tokenizer carries the chat template; None (an endpoint
    teacher with no local model) renders a plain "role: content" transcript into `prompt` — the openai
    engine sends `prompt_messages` anyway. `few_shot` items are `config.FewShotExample`s or
    {user, assistant} dicts.
    """

    name: ClassVar[str] = "prompt"
    reads: ClassVar[tuple[str, ...]] = (S.QUESTION, S.DOMAIN)
    writes: ClassVar[tuple[str, ...]] = (S.PROMPT, PROMPT_MESSAGES)

    def __init__(
        self,
        model_path: str | None,
        system_prompt: str | Mapping[str, str] | None = None,
        few_shot: Sequence[Any] | Mapping[str, Sequence[Any]] = (),
        think_prefix: bool = False,
    ):
        self.system_prompt = system_prompt or None
        self.few_shot = few_shot_by_domain(few_shot)
        self.think_prefix = bool(think_prefix)
        self.tokenizer = None
        if model_path is not None:
            from transformers import AutoTokenizer

            from ded_ray.models import resolve_model

            # Resolved here, in the actor: a model name finds this node's copy (models.model_ref).
            self.tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(model_path)))
            if not getattr(self.tokenizer, "chat_template", None):
                raise StageError(
                    f"stage 'prompt': the tokenizer of {model_path} has no chat template; use an instruct/chat "
                    "model or add chat_template.jinja to its folder"
                )

    def messages(self, question: str, domain: str = "math", tests: Any = "", meta: Any = "") -> list[dict]:
        """The chat for one problem (`problem_chat` with this stage's settings)."""
        return problem_chat(question, domain, tests, meta, self.system_prompt, self.few_shot)

    def render(self, chat: list[dict]) -> str:
        if self.tokenizer is None:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant: "
            return text + THINK_PREFIX if self.think_prefix else text
        return render_chat(self.tokenizer, chat, self.think_prefix)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        tests = batch[S.TESTS] if S.TESTS in batch.columns else pd.Series([""] * len(batch), index=batch.index)
        meta = batch[S.META] if S.META in batch.columns else pd.Series([""] * len(batch), index=batch.index)
        prompts, messages = [], []
        for question, domain, t, m in zip(batch[S.QUESTION], batch[S.DOMAIN], tests, meta):
            chat = self.messages(question, domain, t, m)
            prompts.append(self.render(chat))
            messages.append(json.dumps(chat, ensure_ascii=False))
        batch = batch.copy()
        batch[S.PROMPT] = prompts
        batch[PROMPT_MESSAGES] = messages
        return batch


def render_chat(tokenizer, chat: list[dict], think_prefix: bool = False) -> str:
    """The chat as a model gets it (rollouts, evaluation, and the prompt part of SFT: `train/tokenize.py`):
    the template's rendering with its generation prompt, then "<think>\n" when `think_prefix` and the
    template has not opened the think block itself (R1-Distill's and QwQ's generation prompts already do)."""
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    if think_prefix and not text.rstrip().endswith(THINK_PREFIX.strip()):
        text += THINK_PREFIX
    return text


@functools.lru_cache(maxsize=8)
def _cached_stage(model_path, system_prompt_json, few_shot_json, think_prefix) -> PromptStage:
    return PromptStage(model_path, json.loads(system_prompt_json), json.loads(few_shot_json), think_prefix)


def render_prompts_task(batch: pd.DataFrame, model_path, system_prompt_json, few_shot_json,
                        think_prefix) -> pd.DataFrame:
    """`PromptStage` as a plain Ray Data task function (tokenizer cached per worker process).

    A task rather than an actor on purpose: it fuses with the fan-out task and holds no CPU between
    batches, and it asks only `LIGHT_TASK_CPUS`, so the engine's actor pool can have the rest of a small
    machine (a long-lived 1-CPU prompt actor plus an engine actor starve the fan-out tasks on 2 cores).
    """
    return _cached_stage(model_path, system_prompt_json, few_shot_json, think_prefix)(batch)


def add_prompts(ds, model_path, system_prompt=None, few_shot: Sequence[Any] | Mapping = (), think_prefix: bool = False):
    """Lazily add `prompt` and `prompt_messages` to a ray Dataset (see `render_prompts_task`)."""
    return ds.map_batches(
        render_prompts_task,
        fn_kwargs={
            "model_path": None if model_path is None else str(model_path),
            "system_prompt_json": json.dumps(system_prompt),  # JSON: a per-domain dict is not hashable
            "few_shot_json": json.dumps(few_shot_by_domain(few_shot)),
            "think_prefix": bool(think_prefix),
        },
        batch_format="pandas",
        num_cpus=LIGHT_TASK_CPUS,
    )
