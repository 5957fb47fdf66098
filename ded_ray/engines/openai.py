"""The `openai` engine: any OpenAI-compatible `/v1/chat/completions` endpoint (a Ray Serve teacher, a
hosted API) called from a Ray Data actor pool with an async httpx client.

Per row it sends `prompt_messages` (the chat the prompt stage built, system prompt included: the server
applies only its chat template) with the teacher's sampling and the row's `seed`, and fills the generation
columns of `engines.base`:
- `num_tokens` is the server's `usage.completion_tokens` (the served model's tokenizer);
- `finish_reason` is the server's ("length" stays "length", anything else that ended a completion is
  "stop");
- `token_entropy` is the mean top-k entropy in bits when `sampling.logprobs` asks for logprobs
  (`engines.entropy`), else null.

The teacher's reasoning is kept. Servers that split the chain of thought off the answer (DeepSeek's API,
`deepseek-reasoner`; vLLM with `--reasoning-parser`) return it beside `content`, as `reasoning_content`
(DeepSeek; vLLM before the rename) or `reasoning` (vLLM after it; during the transition vLLM sent both,
with the same text, so one is taken, never both). The response is then rebuilt as the model wrote it,
`"<think>\\n" + reasoning.strip("\\n") + "\\n</think>\\n\\n" + content.lstrip("\\n")`, which is character for
character how the Qwen3 template renders `reasoning_content` and what an R1-style model emits after its
`<think>\\n` generation prompt, so the `<think>` format check, `to_sft` and `diversity.think_part` see the
same text as from a server that leaves the think block in `content`. A content that already opens with
`<think>` is kept as it is (no doubled block); no reasoning field, or a blank one: content unchanged. With
reasoning but no answer the block is left open (`"<think>\\nR"`): vLLM sends no content both when the model
never closed the block (a `length` cut) and when it stopped right after `</think>`, so a `</think>` would
claim what we cannot know; either way the format check rejects a response with no answer.

Streaming (`rollout.stream`): the request adds `stream: true` and `stream_options: {include_usage: true}`
and the body is read as server-sent events (`engines.sse`). The chunks' `delta.content`, `delta.reasoning_content`
or `delta.reasoning`, `finish_reason`, `logprobs.content` and the final usage chunk are folded into the body
the non-streaming call returns and parsed by the same `parse_completion`, so a completion gives the same
row either way. `num_tokens` is the usage chunk's `completion_tokens`; a server that sends no usage falls
back, as without streaming, on the number of logprob entries, and without logprobs on the number of chunks
that carried text (a lower bound: such a chunk holds at least one token, sometimes more). It matters for
long (16k-token) reasoning completions behind proxies that close a connection idle for a minute or two:
tokens keep arriving, and `request_timeout_s` bounds the silence between two reads, not the whole answer.
The project's own transformers Serve teacher does not stream (it answers 400 `unsupported_stream`, so
`http_400` rows): keep `stream` off for it; vLLM, DeepSeek and OpenAI stream.

Failures become rows, never a failed job:
- 429, 5xx, timeouts and connection errors are retried `max_retries` times with exponential backoff
  (`retry_backoff_s` doubled per retry, with jitter; a server's Retry-After wins), then the row gets
  `http_<code>`, `timeout` or `connection_error`;
- other 4xx (a prompt the server refuses, a bad key) are not retried: `http_<code>`, or
  `prompt_too_long` for a 400 that says the prompt does not fit the model's context;
- a 200 whose body is not a chat completion: `bad_response`.
Streaming adds:
- a stream that ends before `data: [DONE]` without a finish_reason (a proxy or the server closed it), or a
  connection dropped mid-chunk: `connection_error`, retried; silence longer than `request_timeout_s`:
  `timeout`, retried;
- a `data:` event that is not a JSON chunk: `bad_response`;
- an error object sent inside the stream (vLLM does, once the 200 has gone out): handled as its `code`
  would be as a status (`http_<code>`, retried or not as above; `bad_response` without a numeric code);
- a server that ignores `stream: true` and sends one JSON body is read as without streaming.
A retry starts the completion again; nothing partial is kept.

Requests in flight per actor are bounded by `max_concurrent_requests`; the actor pool size by
`concurrency`. The API key is read from the environment variable named by `api_key_env` in the driver
(an unset variable fails there, naming the variable) and travels to the actors inside `Secret`, whose repr
hides it; an actor whose own environment has the variable uses its own value. The key is never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import RolloutConfig, SamplingConfig
from ded_ray.engines.base import PROMPT_MESSAGES
from ded_ray.engines.entropy import mean_entropy_bits, openai_steps
from ded_ray.engines.output import (
    BAD_RESPONSE,
    CONNECTION_ERROR,
    PROMPT_TOO_LONG,
    TIMEOUT,
    error_row,
    ok_row,
    set_generation_columns,
)
from ded_ray.engines.sse import DONE, sse_data
from ded_ray.ray_helpers import on_actors

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 30.0
CLIENT_CPUS = 0.05  # Ray CPUs reserved per client actor
_TOO_LONG_MARKERS = ("context_length_exceeded", "maximum context length", "longer than the maximum model length")
# Where servers put the chain of thought they split off `content`: DeepSeek's API and vLLM before its rename
# (vllm-project/vllm#27752) say `reasoning_content`; vLLM after it (ChatMessage / DeltaMessage) says `reasoning`.
REASONING_FIELDS = ("reasoning_content", "reasoning")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class Secret:
    """A string that never shows in a repr, a log line or an error message."""

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def read_api_key(api_key_env: str | None) -> Secret | None:
    """The key from the environment variable `api_key_env`; None when no variable is named.

    Raises ValueError (naming the variable, not the value) when the variable is named but unset.
    """
    if not api_key_env:
        return None
    value = os.environ.get(api_key_env)
    if not value:
        raise ValueError(
            f"openai engine: the environment variable {api_key_env!r} (api_key_env) is not set; "
            f"export it with the endpoint's API key, or drop api_key_env for an endpoint without auth"
        )
    return Secret(value)


def chat_url(endpoint: str) -> str:
    """`<endpoint>/chat/completions` for a base URL ending in /v1 (a trailing slash is tolerated)."""
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        raise ValueError(f"openai engine: endpoint {endpoint!r} must be a base URL ending in /v1 (e.g. http://127.0.0.1:8000/v1)")
    return base + "/chat/completions"


def request_body(
    model: str, messages: list[dict[str, str]], sampling: SamplingConfig, seed: int | None, stream: bool = False
) -> dict[str, Any]:
    """The JSON body of one chat completion request (n=1: more samples are more fanned-out rows)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
    }
    if seed is not None:
        body["seed"] = int(seed)
    if sampling.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = int(sampling.logprobs)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the token count arrives in a last, choice-less chunk
    return body


def reasoning_of(message: dict[str, Any]) -> str:
    """The chain of thought a server split off a message or a stream delta ("" when there is none)."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return value  # first field only: a server sending both sends the same text twice
    return ""


def with_reasoning(content: str, reasoning: str) -> str:
    """The response as the model wrote it: the split-off reasoning back in a `<think>` block before `content`.

    The joins are the Qwen3 template's (`'<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'
    + content.lstrip('\\n')`); see the module docstring for the no-answer and already-tagged cases.
    """
    if not reasoning.strip() or content.lstrip().startswith(THINK_OPEN):
        return content
    think = THINK_OPEN + "\n" + reasoning.strip("\n")
    answer = content.lstrip("\n")
    if not answer.strip():
        return think  # no answer: we cannot tell whether the model closed the block
    return think + "\n" + THINK_CLOSE + "\n\n" + answer


def parse_completion(payload: Any) -> dict[str, Any]:
    """The generation columns of a chat completion JSON body; `bad_response` when it is not one."""
    try:
        choice = payload["choices"][0]
        message = choice["message"]
        text = with_reasoning(message["content"] or "", reasoning_of(message))
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = payload.get("usage") or {}
        tokens = usage.get("completion_tokens")
        logprobs = choice.get("logprobs")
        if tokens is None:  # some servers omit usage; the logprob list has one entry per generated token
            tokens = len((logprobs or {}).get("content") or [])
        entropy = mean_entropy_bits(openai_steps(logprobs)) if logprobs else None
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        log.warning("openai engine: response is not a chat completion (%s: %s)", type(exc).__name__, exc)
        return error_row(BAD_RESPONSE)
    return ok_row(text, int(tokens), reason, entropy)


class StreamedCompletion:
    """Folds the chunks of one streamed chat completion into the body the non-streaming call returns, so
    both paths end in `parse_completion` and give the same row for the same completion.

    `add` raises TypeError / AttributeError on a chunk that is not a chat completion chunk.
    """

    def __init__(self):
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.logprobs: list[Any] | None = None  # None until a chunk carries logprobs
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.text_chunks = 0  # chunks that carried text: the token count of last resort

    def add(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage"):  # with include_usage, a last chunk with `choices: []`
            self.usage = dict(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:  # n=1: any other index is not ours
                self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        text, reasoning = delta.get("content") or "", reasoning_of(delta)
        if not isinstance(text, str):
            raise TypeError(f"delta.content is a {type(text).__name__}, not a string")
        self.content.append(text)
        self.reasoning.append(reasoning)
        self.text_chunks += bool(text or reasoning)
        steps = (choice.get("logprobs") or {}).get("content")
        if steps is not None:
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(steps)  # in place: a 16k-token stream has as many chunks
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        """The chunks so far as a non-streamed chat completion body."""
        message = {"role": "assistant", "content": "".join(self.content), "reasoning_content": "".join(self.reasoning)}
        usage = self.usage
        if usage is None and self.logprobs is None:  # parse_completion would count logprob entries; there are none
            usage = {"completion_tokens": self.text_chunks}
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason,
                  "logprobs": {"content": self.logprobs} if self.logprobs is not None else None}
        return {"object": "chat.completion", "choices": [choice], "usage": usage}


def stream_error(chunk: Any) -> dict[str, Any] | None:
    """The error object a server sent inside a stream, or None: `{"error": {...}}` (OpenAI style, vLLM now)
    or a top-level `{"object": "error", ...}` (older vLLM)."""
    if not isinstance(chunk, dict):
        return None
    if isinstance(chunk.get("error"), dict):
        return chunk["error"]
    return chunk if chunk.get("object") == "error" else None


def error_status(error: dict[str, Any]) -> int | None:
    """The HTTP status an in-stream error stands for (its numeric `code`), or None."""
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        return code
    if isinstance(code, str) and code.isdigit() and 400 <= int(code) < 600:
        return int(code)
    return None


def refusal_reason(status: int, text: str) -> str:
    """The error slug of a non-retried 4xx: `prompt_too_long` when the server says the prompt does not fit
    (OpenAI's `context_length_exceeded`, vLLM's and our Serve app's wording), else `http_<status>`."""
    lowered = (text or "").lower()
    if status == 400 and any(m in lowered for m in _TOO_LONG_MARKERS):
        return PROMPT_TOO_LONG
    return f"http_{status}"


def _parsed_body(response) -> Attempt:
    """The row of a 200 whose whole body is one chat completion JSON."""
    try:
        return Attempt(row=parse_completion(response.json()))
    except json.JSONDecodeError:
        return Attempt(row=error_row(BAD_RESPONSE))


def _retry_after_s(response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), MAX_BACKOFF_S) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


@dataclass
class Attempt:
    """What one try at a row gave: a final `row` (a success, or an error not worth retrying), or a
    retryable `failure` slug (the row's error once retries run out) with the server's Retry-After."""

    row: dict[str, Any] | None = None
    failure: str = CONNECTION_ERROR
    wait_s: float | None = None


class OpenAIChatClient:
    """Ray Data actor: calls the endpoint for each row of a pandas batch, a bounded number at a time.

    One event loop and one HTTP connection pool per actor, kept across batches.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        sampling: dict[str, Any],
        api_key_env: str | None = None,
        api_key: Secret | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        retry_backoff_s: float = 1.0,
        max_concurrent_requests: int = 8,
        stream: bool = False,
    ):
        import httpx

        self.url = chat_url(endpoint)
        self.model = model
        self.sampling = SamplingConfig(**sampling)
        # The actor's own environment first (a cluster may set the key on the workers only).
        key = (read_api_key(api_key_env) if api_key_env and os.environ.get(api_key_env) else None) or api_key
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key.get()}"
        self.max_retries = max(0, int(max_retries))
        self.retry_backoff_s = max(0.0, float(retry_backoff_s))
        self.max_concurrent = max(1, int(max_concurrent_requests))
        self.stream = bool(stream)
        self.loop = asyncio.new_event_loop()
        limits = httpx.Limits(max_connections=self.max_concurrent, max_keepalive_connections=self.max_concurrent)
        self.client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s), limits=limits)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in (PROMPT_MESSAGES, S.SEED) if c not in batch.columns]
        if missing:
            raise ValueError(
                f"openai engine needs columns {missing}; the batch has {sorted(batch.columns)} (run the prompt stage first)"
            )
        messages = [_messages(m) for m in batch[PROMPT_MESSAGES]]
        seeds = [None if pd.isna(s) else int(s) for s in batch[S.SEED]]
        results = self.loop.run_until_complete(self._all(messages, seeds))
        return set_generation_columns(batch, results)

    async def _all(self, messages: list[list[dict[str, str]]], seeds: list[int | None]) -> list[dict[str, Any]]:
        gate = asyncio.Semaphore(self.max_concurrent)

        async def one(m, s):
            async with gate:
                return await self.complete(m, s)

        return list(await asyncio.gather(*(one(m, s) for m, s in zip(messages, seeds))))

    async def complete(self, messages: list[dict[str, str]], seed: int | None) -> dict[str, Any]:
        """One row: POST with retries; the generation columns (an error row when it finally fails)."""
        body = request_body(self.model, messages, self.sampling, seed, stream=self.stream)
        once = self._stream_once if self.stream else self._post_once
        for attempt in range(self.max_retries + 1):
            outcome = await once(body)
            if outcome.row is not None:
                return outcome.row
            if attempt < self.max_retries:
                delay = outcome.wait_s if outcome.wait_s is not None else self._backoff(attempt)
                log.info("openai engine: %s, retry %d/%d in %.1fs", outcome.failure, attempt + 1, self.max_retries,
                         delay)
                await asyncio.sleep(delay)
        log.warning("openai engine: giving up on a row after %d attempts: %s", self.max_retries + 1, outcome.failure)
        return error_row(outcome.failure)

    async def _post_once(self, body: dict[str, Any]) -> Attempt:
        """One non-streamed request."""
        import httpx

        try:
            response = await self.client.post(self.url, json=body)
        except httpx.TimeoutException:
            return Attempt(failure=TIMEOUT)
        except httpx.TransportError as exc:  # refused, reset, DNS: the endpoint is down or flaky
            log.debug("openai engine: %s on %s", type(exc).__name__, self.url)
            return Attempt(failure=CONNECTION_ERROR)
        if response.status_code != 200:
            return self._refused(response.status_code, response.text, _retry_after_s(response))
        return _parsed_body(response)

    async def _stream_once(self, body: dict[str, Any]) -> Attempt:
        """One streamed request; a connection that drops or stalls mid-stream fails like one that never
        answered (a transport error or a timeout, retried)."""
        import httpx

        try:
            async with self.client.stream("POST", self.url, json=body) as response:
                if response.status_code != 200:  # refused before the stream began: a plain error body
                    await response.aread()
                    return self._refused(response.status_code, response.text, _retry_after_s(response))
                if response.headers.get("content-type", "").startswith("application/json"):
                    await response.aread()  # a server that ignores `stream: true` answers with one body
                    return _parsed_body(response)
                return await self._read_stream(response)
        except httpx.TimeoutException:
            return Attempt(failure=TIMEOUT)
        except httpx.TransportError as exc:  # includes a body cut mid-chunk (RemoteProtocolError)
            log.debug("openai engine: %s on %s mid-stream", type(exc).__name__, self.url)
            return Attempt(failure=CONNECTION_ERROR)

    async def _read_stream(self, response) -> Attempt:
        """The row of a 200 event stream, or why it is not one."""
        streamed = StreamedCompletion()
        done = False
        # Both generators closed here, inside the loop's run: left to the GC, their finalizers would be
        # scheduled on a loop that has stopped.
        async with aclosing(response.aiter_lines()) as lines, aclosing(sse_data(lines)) as events:
            async for data in events:
                if data.strip() == DONE:
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                    error = stream_error(chunk)
                    if error is not None:
                        return self._stream_refused(error)
                    streamed.add(chunk)
                except (json.JSONDecodeError, TypeError, AttributeError) as exc:
                    log.warning("openai engine: a stream chunk is not a chat completion chunk (%s: %s)",
                                type(exc).__name__, exc)
                    return Attempt(row=error_row(BAD_RESPONSE))
        if not done and streamed.finish_reason is None:
            # Ended cleanly but early: a proxy or the server closed the stream mid-completion.
            log.debug("openai engine: stream from %s ended before [DONE]", self.url)
            return Attempt(failure=CONNECTION_ERROR)
        return Attempt(row=parse_completion(streamed.completion()))

    def _stream_refused(self, error: dict[str, Any]) -> Attempt:
        """An error object sent inside a 200 stream, handled as the status its `code` names."""
        status = error_status(error)
        message = str(error.get("message") or "")
        if status is None:
            log.warning("openai engine: error inside the stream from %s: %s", self.url, message[:200])
            return Attempt(row=error_row(BAD_RESPONSE))
        return self._refused(status, json.dumps({"error": error}), None)

    def _refused(self, status: int, text: str, retry_after_s: float | None) -> Attempt:
        """A non-200 answer: retried (429, 5xx, ...) or final (`http_<status>`, `prompt_too_long`)."""
        if status not in RETRY_STATUSES:
            log.warning("openai engine: http_%d from %s: %s", status, self.url, (text or "")[:200])
            return Attempt(row=error_row(refusal_reason(status, text)))
        return Attempt(failure=f"http_{status}", wait_s=retry_after_s)

    def _backoff(self, attempt: int) -> float:
        # Exponential with full jitter: concurrent rows that failed together do not retry together.
        return min(MAX_BACKOFF_S, self.retry_backoff_s * (2**attempt)) * (0.5 + random.random() / 2)

    def __del__(self):
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.run_until_complete(self.client.aclose())
            finally:
                loop.close()


def _messages(value: Any) -> list[dict[str, str]]:
    """`prompt_messages` as a list of {role, content}: a JSON string (the contract) or a list already."""
    messages = json.loads(value) if isinstance(value, str) else list(value)
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def client_kwargs(
    endpoint: str, model: str, sampling: SamplingConfig, config: RolloutConfig, api_key_env: str | None
) -> dict[str, Any]:
    """Constructor kwargs of `OpenAIChatClient` (plain values and a `Secret`: they travel to actors)."""
    return {
        "endpoint": endpoint,
        "model": model,
        "sampling": sampling.model_dump(),
        "api_key_env": api_key_env,
        "api_key": read_api_key(api_key_env),
        "timeout_s": config.request_timeout_s,
        "max_retries": config.max_retries,
        "retry_backoff_s": config.retry_backoff_s,
        "max_concurrent_requests": config.max_concurrent_requests,
        "stream": config.stream,
    }


class OpenAIEngine:
    """`RolloutEngine` over an OpenAI-compatible endpoint; `model` is the served model id."""

    name = "openai"

    # The signature of the RolloutEngine protocol (engines/base.py), which every engine repeats.
    def generate(
        self,
        ds,
        model: str,
        sampling: SamplingConfig,
        config: RolloutConfig,
        *,
        endpoint: str | None = None,
        api_key_env: str | None = None,
    ):
        if not endpoint:
            raise ValueError("the openai engine needs the teacher's `endpoint` (a base URL ending in /v1)")
        chat_url(endpoint)  # fail now, in the driver, on a malformed URL
        return on_actors(
            ds.map_batches, OpenAIChatClient, config.concurrency,  # autoscales between its (min, max)
            fn_constructor_kwargs=client_kwargs(endpoint, model, sampling, config, api_key_env),
            # Waiting on HTTP needs little CPU: a small reservation, so the client pool fits beside a local
            # Serve teacher and the 1-CPU tasks of the stages around it on a 2-CPU machine.
            num_cpus=min(config.num_cpus_per_actor, CLIENT_CPUS),
            batch_size=config.batch_size,
            batch_format="pandas",
        )
