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

Failures become rows, never a failed job:
- 429, 5xx, timeouts and connection errors are retried `max_retries` times with exponential backoff
  (`retry_backoff_s` doubled per retry, with jitter; a server's Retry-After wins), then the row gets
  `http_<code>`, `timeout` or `connection_error`;
- other 4xx (a prompt the server refuses, a bad key) are not retried: `http_<code>`, or
  `prompt_too_long` for a 400 that says the prompt does not fit the model's context;
- a 200 whose body is not a chat completion: `bad_response`.

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
from ded_ray.ray_helpers import actor_pool

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 30.0
CLIENT_CPUS = 0.05  # Ray CPUs reserved per client actor
_TOO_LONG_MARKERS = ("context_length_exceeded", "maximum context length", "longer than the maximum model length")


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


def request_body(model: str, messages: list[dict[str, str]], sampling: SamplingConfig, seed: int | None) -> dict[str, Any]:
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
    return body


def parse_completion(payload: Any) -> dict[str, Any]:
    """The generation columns of a chat completion JSON body; `bad_response` when it is not one."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"] or ""
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


def refusal_reason(status: int, text: str) -> str:
    """The error slug of a non-retried 4xx: `prompt_too_long` when the server says the prompt does not fit
    (OpenAI's `context_length_exceeded`, vLLM's and our Serve app's wording), else `http_<status>`."""
    lowered = (text or "").lower()
    if status == 400 and any(m in lowered for m in _TOO_LONG_MARKERS):
        return PROMPT_TOO_LONG
    return f"http_{status}"


def _retry_after_s(response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), MAX_BACKOFF_S) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


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
        import httpx

        body = request_body(self.model, messages, self.sampling, seed)
        failure = CONNECTION_ERROR
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            try:
                response = await self.client.post(self.url, json=body)
            except httpx.TimeoutException:
                failure = TIMEOUT
            except httpx.TransportError as exc:  # refused, reset, DNS: the endpoint is down or flaky
                failure = CONNECTION_ERROR
                log.debug("openai engine: %s on %s", type(exc).__name__, self.url)
            else:
                if response.status_code == 200:
                    try:
                        return parse_completion(response.json())
                    except json.JSONDecodeError:
                        return error_row(BAD_RESPONSE)
                failure = f"http_{response.status_code}"
                if response.status_code not in RETRY_STATUSES:
                    log.warning("openai engine: %s from %s: %s", failure, self.url, response.text[:200])
                    return error_row(refusal_reason(response.status_code, response.text))
                wait = _retry_after_s(response)
            if attempt < self.max_retries:
                delay = wait if wait is not None else self._backoff(attempt)
                log.info("openai engine: %s, retry %d/%d in %.1fs", failure, attempt + 1, self.max_retries, delay)
                await asyncio.sleep(delay)
        log.warning("openai engine: giving up on a row after %d attempts: %s", self.max_retries + 1, failure)
        return error_row(failure)

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
        return ds.map_batches(
            OpenAIChatClient,
            fn_constructor_kwargs=client_kwargs(endpoint, model, sampling, config, api_key_env),
            compute=actor_pool(config.concurrency),  # autoscales between its (min, max)
            # Waiting on HTTP needs little CPU: a small reservation, so the client pool fits beside a local
            # Serve teacher and the 1-CPU tasks of the stages around it on a 2-CPU machine.
            num_cpus=min(config.num_cpus_per_actor, CLIENT_CPUS),
            batch_size=config.batch_size,
            batch_format="pandas",
        )
