"""Chat tokenisation for SFT: the student's chat template, labels on the final assistant turn only.

A corpus row's `messages` (system? / user / assistant, possibly earlier few-shot turns) is rendered with the
student's chat template. The prompt — everything up to and including the generation prompt of the final
assistant turn — is tokenised on its own, exactly as the model sees it at inference, and the assistant's
completion is tokenised after it. Labels are the token ids on the completion and -100 (ignored by the loss)
on the prompt and on whatever the template appends after the end-of-turn token (e.g. ChatML's trailing
newline). Earlier assistant turns are context, not targets.

Over-long samples are rejected with a reason (`too_long`), never silently cut; `truncate=True` cuts the
completion to fit instead (a prompt that alone does not fit is still rejected: `prompt_too_long`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ded_ray import schema as S
from ded_ray.stages.base import Stage, mark_rejected

IGNORE_INDEX = -100  # label of a token that contributes no loss (torch cross_entropy's ignore_index)

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


def tokenize_chat(tokenizer, messages: Any, max_seq_len: int, truncate: bool = False) -> TokenizedChat:
    """Tokenise one chat; labels only on the final assistant turn. See the module docstring.

    `max_seq_len` counts prompt + completion tokens. Returns a `TokenizedChat` whose `reject_reason` is one of
    `no_assistant_turn`, `template_mismatch`, `empty_completion`, `prompt_too_long` or `too_long`.
    """
    msgs = normalise_messages(messages)
    if not msgs or msgs[-1]["role"] != "assistant":
        roles = [m["role"] for m in msgs]
        return _rejected("no_assistant_turn", f"the last message must be the assistant's; roles: {roles}")

    prompt_text = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(msgs, tokenize=False)
    if not full_text.startswith(prompt_text):
        # A template that rewrites earlier turns when the assistant's is added (some strip <think> blocks
        # from history): our prompt would not be what the model sees at inference, so do not guess.
        return _rejected("template_mismatch", "the chat template's render of the prompt is not a prefix of the full chat")
    completion_text = full_text[len(prompt_text):]

    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    target_len = _target_length(completion_ids, tokenizer.eos_token_id)
    if target_len == 0:
        return _rejected("empty_completion", "the assistant turn has no tokens to learn")

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


def _target_length(completion_ids: list[int], eos_id: int | None) -> int:
    """Tokens of the completion to learn: up to and including its last end-of-turn token, if any.

    The model must learn to stop (so the end-of-turn token is a target), but not the template's decoration
    after it, which it never generates.
    """
    if eos_id is not None and eos_id in completion_ids:
        return len(completion_ids) - completion_ids[::-1].index(eos_id)
    return len(completion_ids)


class TokenizeStage(Stage):
    """Ray Data stage: `messages` -> `input_ids`, `labels`, `seq_len`, `num_label_tokens`.

    Unusable rows keep empty ids and get `reject_reason`/`reject_detail` (the stage never drops rows).
    """

    name: ClassVar[str] = "train_tokenize"
    reads: ClassVar[tuple[str, ...]] = (S.MESSAGES,)
    writes: ClassVar[tuple[str, ...]] = (INPUT_IDS, LABELS, SEQ_LEN, NUM_LABEL_TOKENS)

    def __init__(self, model_path: str, max_seq_len: int, truncate: bool = False):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
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
