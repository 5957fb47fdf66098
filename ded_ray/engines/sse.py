"""Server-sent events framing: the `data` of each event of a `text/event-stream` body.

The openai engine's streaming mode reads `/v1/chat/completions` with `stream: true`, whose body is a series
of events `data: {chunk json}` ending with `data: [DONE]`. The framing follows the SSE spec (HTML Living
Standard, "Parsing an event stream"): an event ends at a blank line; its `data:` lines are joined with "\\n";
one space after the colon is dropped; a line starting with ":" is a comment (the keep-alive pings proxies and
servers send during a long silence); other fields (`event:`, `id:`, `retry:`) carry nothing the engine needs.
An event the stream ends inside of is dropped, as the spec says: a connection cut mid-event must read as a
cut, not as a truncated JSON chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

DONE = "[DONE]"  # the OpenAI-style end-of-stream sentinel (vLLM, DeepSeek and OpenAI send it)


def field_of(line: str) -> tuple[str, str]:
    """(`name`, `value`) of one SSE line: `data: x` -> ("data", "x"); a line without a colon is a name alone."""
    name, colon, value = line.partition(":")
    if colon and value.startswith(" "):
        value = value[1:]
    return name, value


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each complete event in `lines` (a body already split at line ends, e.g. httpx's
    `Response.aiter_lines()`, which also joins lines a network read split in two)."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:  # the blank line that ends an event
            if data:
                yield "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            continue
        name, value = field_of(line.lstrip("\ufeff"))  # a UTF-8 BOM may open the stream
        if name == "data":
            data.append(value)
