"""SFT tokenisation under the real chat templates of reasoning models: the reasoning stays in the labels.

The built-in SmolLM2 tokenizer carries each template of `shared/data/chat_templates/` in turn (their special
tokens are plain text to it, which changes ids, not what is rendered), with real R1-distill traces. The
prompt must be token for token what the engines are sent (`PromptStage.render`, tokenised as `engines.hf`
does) and the labels exactly the whole response, `<think>…</think>` included, plus the end of turn.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ded_ray.models import resolve_model
from ded_ray.stages.prompt import PromptStage
from ded_ray.stages.to_sft import to_messages
from ded_ray.train.tokenize import IGNORE_INDEX, end_of_turn, tokenize_chat

R1_QWEN = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
QWEN3 = "Qwen-Qwen3-0.6B.jinja"
QWEN25 = "Qwen-Qwen2.5-7B-Instruct.jinja"
EOS_R1 = "<｜end▁of▁sentence｜>"
# template -> (end of turn learned, decoration after it, end of the generation prompt)
TEMPLATES = {
    R1_QWEN: (EOS_R1, "", "<｜Assistant｜><think>\n"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.2025-01.jinja": (EOS_R1, "", "<｜Assistant｜>\n"),
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": (EOS_R1, "", "<｜Assistant｜><think>\n"),
    "llama-cpp-deepseek-r1.jinja": (EOS_R1, "", "<｜Assistant｜><think>\n"),
    "Qwen-QwQ-32B.jinja": ("<|im_end|>", "\n", "<|im_start|>assistant\n<think>\n"),
    QWEN3: ("<|im_end|>", "\n", "<|im_start|>assistant\n"),
    QWEN25: ("<|im_end|>", "\n", "<|im_start|>assistant\n"),
}
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
MAX_LEN = 32768


@pytest.fixture(scope="module")
def smollm2() -> str:
    return str(resolve_model("smollm2-135m"))


@pytest.fixture(scope="module")
def templates(shared_data) -> dict[str, str]:
    folder = shared_data / "chat_templates"
    assert {p.name for p in folder.glob("*.jinja")} == set(TEMPLATES)  # a new template needs its row above
    return {name: (folder / name).read_text() for name in TEMPLATES}


@pytest.fixture(scope="module")
def traces(shared_data) -> list[tuple[str, str]]:
    """(problem, "<think>\\n" + completion) for three real traces: thinking, `</think>`, then the answer."""
    with open(shared_data / "reasoning_traces_thought_anchors" / "math_traces.jsonl") as f:
        rows = [json.loads(next(f)) for _ in range(3)]
    return [(r["problem"], "<think>\n" + r["traces"][0]["completion"]) for r in rows]


@pytest.fixture(scope="module")
def setup(smollm2, templates):
    """(name, system prompt) -> (tokenizer for tokenize_chat, the prompt stage the engines get prompts from).

    Loading a tokenizer takes seconds on a busy machine, so each is loaded once and given the template asked
    for on every call: tests must get them through here.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    stages = {}

    def get(name: str, system_prompt: str | None = None):
        if system_prompt not in stages:  # its own tokenizer: the engines' side is not tokenize_chat's
            stages[system_prompt] = PromptStage(smollm2, system_prompt=system_prompt)
        stage = stages[system_prompt]
        tokenizer.chat_template = stage.tokenizer.chat_template = templates[name]
        return tokenizer, stage

    return get


def _engine_prompt_ids(stage: PromptStage, question: str) -> list[int]:
    prompt = stage.render(stage.messages(question))
    return stage.tokenizer([prompt], add_special_tokens=False)["input_ids"][0]  # as engines.hf tokenises it


def _check(tokenizer, stage, question, response, expected_target, decoration="", system=None):
    """The sample is engine prompt ids + ids of `expected_target` (all labelled) + `decoration` (input only)."""
    tok = tokenize_chat(tokenizer, to_messages(question, response, system), MAX_LEN)
    assert tok.reject_reason is None, tok.reject_detail
    prompt_ids = _engine_prompt_ids(stage, question)
    target_ids = tokenizer(expected_target, add_special_tokens=False)["input_ids"]
    decoration_ids = tokenizer(decoration, add_special_tokens=False)["input_ids"] if decoration else []
    assert tok.input_ids == prompt_ids + target_ids + decoration_ids
    assert tok.labels == [IGNORE_INDEX] * len(prompt_ids) + target_ids + [IGNORE_INDEX] * len(decoration_ids)
    learned = [t for t, l in zip(tok.input_ids, tok.labels) if l != IGNORE_INDEX]
    assert tokenizer.decode(learned) == expected_target
    return tok


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_real_templates_train_on_the_whole_response_after_the_engines_prompt(setup, traces, name):
    tokenizer, stage = setup(name)
    eot, decoration, generation_prompt = TEMPLATES[name]
    assert end_of_turn(tokenizer, stage.messages("q")) == (eot, decoration)
    for question, response in traces:
        assert stage.render(stage.messages(question)).endswith(generation_prompt)
        # A prompt that already opens <think> is followed by the reasoning itself, not a second tag.
        opened = generation_prompt.endswith("<think>\n")
        expected = (response.removeprefix("<think>\n") if opened else response) + eot
        assert "</think>" in expected and response.split("</think>")[0][len("<think>\n"):] in expected
        _check(tokenizer, stage, question, response, expected, decoration)


def test_r1_template_alone_would_drop_the_reasoning(setup, traces):
    """Why tokenize_chat does not render the finished chat: the student's own template strips <think>."""
    tokenizer, _ = setup(R1_QWEN)
    question, response = traces[0]
    rendered = tokenizer.apply_chat_template(to_messages(question, response), tokenize=False)
    assert "</think>" not in rendered and response.split("</think>")[-1] in rendered


def test_response_generated_after_an_opened_think_needs_no_tag(setup, traces):
    question, response = traces[0]
    inside = response.removeprefix("<think>\n")  # what a think_prefix rollout returns
    tokenizer, stage = setup(R1_QWEN)
    with_tag = _check(tokenizer, stage, question, response, inside + EOS_R1)
    assert _check(tokenizer, stage, question, inside, inside + EOS_R1) == with_tag
    # A template whose prompt does not open <think>: the student must learn to open it.
    tokenizer, stage = setup(QWEN25)
    _check(tokenizer, stage, question, inside, response + "<|im_end|>", "\n")


@pytest.mark.parametrize("name", [R1_QWEN, "Qwen-QwQ-32B.jinja", QWEN25])
def test_system_prompt_is_prompt_not_target(setup, traces, name):
    tokenizer, stage = setup(name, SYSTEM)
    eot, decoration, generation_prompt = TEMPLATES[name]
    question, response = traces[1]
    opened = generation_prompt.endswith("<think>\n")
    expected = (response.removeprefix("<think>\n") if opened else response) + eot
    tok = _check(tokenizer, stage, question, response, expected, decoration, system=SYSTEM)
    prompt = tokenizer.decode([t for t, l in zip(tok.input_ids, tok.labels) if l == IGNORE_INDEX])
    assert SYSTEM in prompt and question in prompt


def test_qwen3_with_and_without_reasoning(setup, traces):
    tokenizer, stage = setup(QWEN3)
    question, response = traces[2]
    # Qwen3 would move the reasoning into its own block; here it stays where the model writes it.
    _check(tokenizer, stage, question, response, response + "<|im_end|>", "\n")
    answer = response.split("</think>")[-1].strip()
    # No reasoning: the answer alone, without the empty <think></think> Qwen3 renders into finished chats.
    tok = _check(tokenizer, stage, question, answer, answer + "<|im_end|>", "\n")
    assert "<think>" not in tokenizer.decode(tok.input_ids)


def test_max_seq_len_rejects_or_truncates_the_completion(setup, traces):
    tokenizer, _ = setup(R1_QWEN)
    chat = to_messages(*traces[0])
    full = tokenize_chat(tokenizer, chat, MAX_LEN)
    n = len(full.input_ids)
    assert tokenize_chat(tokenizer, chat, n).input_ids == full.input_ids
    too_long = tokenize_chat(tokenizer, chat, n - 1)
    assert too_long.reject_reason == "too_long" and str(n) in too_long.reject_detail and too_long.input_ids == []
    cut = tokenize_chat(tokenizer, chat, n - 100, truncate=True)
    assert cut.input_ids == full.input_ids[: n - 100] and cut.labels == full.labels[: n - 100]
    assert cut.num_label_tokens == full.num_label_tokens - 100  # R1's end of turn has no decoration
    prompt_len = int(np.argmax(np.array(full.labels) != IGNORE_INDEX))
    assert tokenize_chat(tokenizer, chat, prompt_len, truncate=True).reject_reason == "prompt_too_long"
    assert tokenize_chat(tokenizer, chat, prompt_len).reject_reason == "too_long"


def test_unreconcilable_chats_are_rejected_with_a_reason(setup, traces):
    tokenizer, _ = setup(R1_QWEN)
    question, response = traces[0]
    assert tokenize_chat(tokenizer, to_messages(question, response)[:-1], MAX_LEN).reject_reason == "no_assistant_turn"
    assert tokenize_chat(tokenizer, to_messages(question, "  "), MAX_LEN).reject_reason == "empty_completion"
    # A template that refuses system turns (setup() puts the real template back for the next test).
    tokenizer.chat_template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}"
                            "{% endif %}{{ m.content }}{% endfor %}")
    tok = tokenize_chat(tokenizer, to_messages(question, response, SYSTEM), MAX_LEN)
    assert tok.reject_reason == "template_error" and "no system role" in tok.reject_detail


def test_template_without_an_end_of_turn_falls_back_to_eos(setup):
    tokenizer, _ = setup(QWEN25)  # then replaced: setup() puts the real template back for the next test
    tokenizer.chat_template = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    tok = tokenize_chat(tokenizer, to_messages("What is 2 + 2?", "4"), MAX_LEN)
    assert tokenizer.decode(tok.input_ids) == "user: What is 2 + 2?\nassistant: 4" + tokenizer.eos_token + "\n"
    assert tokenizer.decode([t for t, l in zip(tok.input_ids, tok.labels) if l != IGNORE_INDEX]) == "4" + tokenizer.eos_token


def test_a_think_prefix_never_opens_the_think_block_twice(smollm2, templates):
    """Rollouts with `think_prefix` (R1-style teachers): templates whose generation prompt already opens
    `<think>` get no second tag; the others get one."""
    from transformers import AutoTokenizer

    from ded_ray.stages.prompt import render_chat

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    for name, template in templates.items():
        tokenizer.chat_template = template
        text = render_chat(tokenizer, chat, think_prefix=True)
        assert text.rstrip().endswith("<think>") and text.count("<think>") == 1, name
        assert render_chat(tokenizer, chat) == tokenizer.apply_chat_template(chat, tokenize=False,
                                                                            add_generation_prompt=True)
