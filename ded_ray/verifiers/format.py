"""Format and length checks on a response (the paper's quality filter before verification).

- `format_ok(response, require_think)`: with `require_think`, exactly one `<think>` and one `</think>`,
  in that order, with non-empty thinking and a non-empty answer after it. Without it, any response
  passes unless it has a malformed think block (an unmatched or repeated tag).
- `length_ok(response, max_tokens, tokenizer)`: at most `max_tokens` tokens counted with the student's
  tokenizer (a Hugging Face tokenizer, or any callable str -> list of tokens).
"""

from __future__ import annotations

from typing import Any, Callable

OPEN, CLOSE = "<think>", "</think>"


def format_ok(response: str | None, require_think: bool = True) -> bool:
    if not isinstance(response, str) or not response.strip():
        return False
    opens, closes = response.count(OPEN), response.count(CLOSE)
    if opens == 0 and closes == 0:
        return not require_think
    # R1-style templates put "<think>" in the prompt, so the response may start inside the block.
    if (opens, closes) not in ((1, 1), (0, 1)):
        return False
    start = response.find(OPEN) + len(OPEN) if opens else 0
    end = response.find(CLOSE)
    if end < start:
        return False
    thinking, answer = response[start:end], response[end + len(CLOSE):]
    return bool(thinking.strip()) and bool(answer.strip())


def count_tokens(text: str, tokenizer: Any) -> int:
    """Tokens in `text` without special tokens; `tokenizer` is a HF tokenizer or a callable."""
    if hasattr(tokenizer, "encode"):
        return len(tokenizer.encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return len(tokenizer(text))
    raise TypeError(f"tokenizer must have .encode or be callable, got {type(tokenizer).__name__}")


def length_ok(response: str | None, max_tokens: int, tokenizer: Any | Callable[[str], list]) -> bool:
    if not isinstance(response, str):
        return False
    return count_tokens(response, tokenizer) <= max_tokens
