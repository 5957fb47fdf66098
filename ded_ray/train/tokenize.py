"""Chat tokenisation for SFT: labels on the final assistant turn only, its reasoning included.

A corpus row's `messages` (system? / user / assistant, possibly earlier few-shot turns) becomes exactly the
sequence the student sees and generates at inference, whatever its chat template does to finished chats
(DeepSeek-R1-Distill's renders assistant turns as `content.split('</think>')[-1]`, QwQ's and Qwen3's drop or
move the reasoning): rendering the whole chat through the template would train on answers without reasoning.
So the sample is built from three parts, each tokenised on its own and concatenated (the boundaries are exact):

- prompt: everything before the final assistant turn rendered with `add_generation_prompt=True` and
  tokenised without added special tokens — the call the prompt stage and the hf engine make
  (`stages.prompt.PromptStage.render`, `engines.hf`), so the ids are the engines' prompt ids;
- response: the assistant's content as written, reasoning included. A generation prompt that already opens
  `<think>` (R1-distill, QwQ) is not repeated: the response's own opening tag (and the whitespace the prompt
  puts after it) is dropped. A response missing its opening tag but having `</think>` (generated after such
  a prompt) gets it back where the prompt does not open one (`stages.to_sft.assistant_content`);
- end of turn: what the template puts after an assistant message's content, found by rendering the chat with a
  sentinel as the final assistant content. Up to its last special token (the stop token the model generates;
  if it has none, up to its last non-space character) it is a target; the decoration after it (ChatML's
  trailing newline) is input only. A template that puts nothing there gets `tokenizer.eos_token`.

Labels are the ids of response + end of turn; -100 (ignored by the loss) on the prompt and the decoration.
Earlier assistant turns are context, rendered as the template renders them at inference.

Reject reasons: `no_assistant_turn` (the chat does not end with the assistant's turn), `template_error`
(the chat template raised on this chat, e.g. roles it does not accept), `empty_completion` (the assistant
turn is empty), `too_long` (prompt + completion > max_seq_len). Over-long samples are rejected, never silently
cut; `truncate=True` cuts the completion to fit instead (a prompt that alone does not fit is still rejected:
`prompt_too_long`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, mark_rejected
from ded_ray.stages.prompt import render_chat
from ded_ray.stages.to_sft import assistant_content

IGNORE_INDEX = -100  # label of a token that contributes no loss (torch cross_entropy's ignore_index)
THINK_OPEN = "<think>"
EOT_SENTINEL = "DEDENDOFTURNSENTINEL"  # stands for the final assistant content when finding its end of turn

# Columns the tokenize stage writes (only used inside training, so they live here, not in schema.py).
INPUT_IDS = "input_ids"
LABELS = "labels"
SEQ_LEN = "seq_len"  # prompt + completion tokens (not the corpus's `num_tokens`, which is lineage)
NUM_LABEL_TOKENS = "num_label_tokens"


@dataclass(frozen=True)
class TokenizedChat:
    """One tokenised sample, or the reason it cannot be used (`reject_reason` set, ids empty)."""

    input_ids: list[int]
    labels: list[int]  # same length as input_ids; IGNORE_INDEX where no loss is taken
    reject_reason: str | None = None
    reject_detail: str | None = None

    @property
    def num_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def _rejected(reason: str, detail: str) -> TokenizedChat:
    return TokenizedChat([], [], reason, detail)


def normalise_messages(messages: Any) -> list[dict[str, str]]:
    """Plain `[{role, content}, ...]` from what parquet/Ray Data hands over (numpy arrays of dicts)."""
    if messages is None:
        return []
    return [{"role": str(m["role"]), "content": str(m["content"] or "")} for m in list(messages)]


def render_prompt(tokenizer, chat: list[dict[str, str]]) -> str:
    """The chat as the engines get it (`stages.prompt.render_chat`, without `think_prefix`, which is a rollout
    setting; a student template that opens `<think>` itself is handled in `response_text`)."""
    return render_chat(tokenizer, chat)


def end_of_turn(tokenizer, prompt_chat: list[dict[str, str]]) -> tuple[str, str]:
    """(target, decoration): the text the template puts after the final assistant turn's content.

    The sentinel is plain letters so that templates which trim or split the content keep it whole.
    """
    text = tokenizer.apply_chat_template([*prompt_chat, {"role": "assistant", "content": EOT_SENTINEL}], tokenize=False)
    suffix = text[text.rindex(EOT_SENTINEL) + len(EOT_SENTINEL):] if EOT_SENTINEL in text else ""
    # The model stops at the stop token it generates; what the template renders after it is never generated.
    ends = [suffix.rindex(t) + len(t) for t in tokenizer.all_special_tokens if t and t in suffix]
    cut = max(ends) if ends else len(suffix.rstrip())
    if cut == 0:
        return tokenizer.eos_token or "", suffix
    return suffix[:cut], suffix[cut:]


def response_text(prompt_text: str, content: str) -> str:
    """The assistant's content as generated after `prompt_text`: reasoning kept, `<think>` not opened twice."""
    content = assistant_content(content)
    if prompt_text.rstrip().endswith(THINK_OPEN) and content.startswith(THINK_OPEN):
        after_tag = prompt_text[prompt_text.rindex(THINK_OPEN) + len(THINK_OPEN):]  # e.g. the "\n" of "<think>\n"
        content = content[len(THINK_OPEN):].removeprefix(after_tag)
    return content


def tokenize_chat(tokenizer, messages: Any, max_seq_len: int, truncate: bool = False) -> TokenizedChat:
    """Tokenise one chat; labels only on the final assistant turn. See the module docstring.

    `max_seq_len` counts prompt + completion tokens. Returns a `TokenizedChat` whose `reject_reason` is one of
    `no_assistant_turn`, `template_error`, `empty_completion`, `prompt_too_long` or `too_long`.
    """
    msgs = normalise_messages(messages)
    if not msgs or msgs[-1]["role"] != "assistant":
        roles = [m["role"] for m in msgs]
        return _rejected("no_assistant_turn", f"the last message must be the assistant's; roles: {roles}")
    prompt_chat = msgs[:-1]
    try:
        prompt_text = render_prompt(tokenizer, prompt_chat)
        eot, decoration = end_of_turn(tokenizer, prompt_chat)
    except Exception as exc:  # noqa: BLE001 - whatever the template raises is this row's reason, not a crash
        return _rejected("template_error", f"the chat template raised {type(exc).__name__}: {exc}")
    response = response_text(prompt_text, msgs[-1]["content"])
    if not response.strip():
        return _rejected("empty_completion", "the assistant turn has no text to learn")

    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(response + eot, add_special_tokens=False)["input_ids"]
    completion_ids = target_ids + (tokenizer(decoration, add_special_tokens=False)["input_ids"] if decoration else [])
    target_len = len(target_ids)

    total = len(prompt_ids) + len(completion_ids)
    if total > max_seq_len:
        if not truncate:
            return _rejected("too_long", f"{total} tokens > max_seq_len {max_seq_len} (set train.truncate=true to cut instead)")
        if len(prompt_ids) >= max_seq_len:
            return _rejected("prompt_too_long", f"prompt alone is {len(prompt_ids)} tokens >= max_seq_len {max_seq_len}")
        completion_ids = completion_ids[: max_seq_len - len(prompt_ids)]
        target_len = min(target_len, len(completion_ids))

    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids[:target_len]
    labels += [IGNORE_INDEX] * (len(completion_ids) - target_len)
    return TokenizedChat(prompt_ids + completion_ids, labels)


class TokenizeStage(Stage):
    """Ray Data stage: `messages` -> `input_ids`, `labels`, `seq_len`, `num_label_tokens`.

    Unusable rows keep empty ids and get `reject_reason`/`reject_detail` (the stage never drops rows).
    """

    name: ClassVar[str] = "train_tokenize"
    reads: ClassVar[tuple[str, ...]] = (S.MESSAGES,)
    writes: ClassVar[tuple[str, ...]] = (INPUT_IDS, LABELS, SEQ_LEN, NUM_LABEL_TOKENS)

    def __init__(self, model_path: str, max_seq_len: int, truncate: bool = False):
        from transformers import AutoTokenizer

        from ded_ray.models import resolve_model

        self.tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(model_path)))  # this node's copy
        if self.tokenizer.chat_template is None:
            raise ValueError(f"stage {self.name!r}: the tokenizer of {model_path} has no chat template; "
                             "give a chat/instruct model or add a chat_template to its tokenizer_config")
        self.max_seq_len = max_seq_len
        self.truncate = truncate

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        batch = batch.copy()
        done = [tokenize_chat(self.tokenizer, m, self.max_seq_len, self.truncate) for m in batch[S.MESSAGES]]
        batch[INPUT_IDS] = [np.asarray(t.input_ids, dtype=np.int32) for t in done]
        batch[LABELS] = [np.asarray(t.labels, dtype=np.int32) for t in done]
        batch[SEQ_LEN] = np.asarray([len(t.input_ids) for t in done], dtype=np.int32)
        batch[NUM_LABEL_TOKENS] = np.asarray([t.num_label_tokens for t in done], dtype=np.int32)
        # Always write the reject columns (all None when every row is fine) so every block has one schema.
        for column in (S.REJECT_REASON, S.REJECT_DETAIL):
            if column not in batch.columns:
                batch[column] = pd.Series([None] * len(batch), index=batch.index, dtype=object)
        details = pd.Series([t.reject_detail for t in done], index=batch.index)
        for reason in sorted({t.reject_reason for t in done if t.reject_reason}):
            mark_rejected(batch, [t.reject_reason == reason for t in done], reason, details)
        return batch
