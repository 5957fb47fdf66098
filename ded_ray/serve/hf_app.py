"""An OpenAI-compatible Ray Serve app over transformers: the teacher host when vLLM is not installed.

One Serve application holds one `HFChatModel` deployment per served model (its own replicas and
autoscaling) and one `OpenAIRouter` ingress (FastAPI) that routes by the request's `model` field:
- `POST /v1/chat/completions`: `messages`, `n=1`, `temperature`, `top_p`, `max_tokens`, `seed`,
  `logprobs`/`top_logprobs`; the response is a chat completion with `usage` and, when asked, per-token
  logprobs of the raw (temperature 1) next-token distribution;
- `GET /v1/models`: the served model ids.

Several model ids may share one deployment (teachers that use the same model with other system prompts:
the system prompt travels in `messages`, applied by the client's prompt stage, never by the server).

Errors follow OpenAI's shape `{"error": {"message", "type", "code"}}`: 401 for a missing/wrong Bearer key
(when the app has one), 404 for an unknown model, 400 for a bad request or a prompt that does not fit
(`code: context_length_exceeded`).

Sampling within a replica is one request at a time, seeded with `torch.manual_seed(seed)`: the same
request and seed give the same completion. More throughput comes from more replicas (autoscaling).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256  # when a request does not say; OpenAI's own default depends on the model
MAX_TOP_LOGPROBS = 20  # OpenAI's limit


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI-style error body with `status`."""

    def __init__(self, status: int, message: str, code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": self.message, "type": self.kind, "code": self.code}}, status_code=self.status
        )


def sampling_args(body: dict[str, Any]) -> dict[str, Any]:
    """Validated sampling arguments of a chat completion request body (raises RequestError)."""
    n = body.get("n", 1)
    if n not in (1, None):
        raise RequestError(400, f"n={n} is not supported: send one request per sample (n=1)", "unsupported_n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise RequestError(400, "`messages` must be a non-empty list of {role, content}", "invalid_messages")

    def number(key: str, default: float, lo: float, hi: float) -> float:
        value = body.get(key)
        if value is None:
            return default
        if not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise RequestError(400, f"`{key}` must be a number in [{lo}, {hi}], got {value!r}", f"invalid_{key}")
        return float(value)

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(400, f"`max_tokens` must be a positive integer, got {max_tokens!r}", "invalid_max_tokens")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise RequestError(400, f"`seed` must be a non-negative integer, got {seed!r}", "invalid_seed")
    top_logprobs = body.get("top_logprobs") or 0
    if not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise RequestError(400, f"`top_logprobs` must be an integer in [0, {MAX_TOP_LOGPROBS}]", "invalid_top_logprobs")
    return {
        "messages": [{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
        "temperature": number("temperature", 1.0, 0.0, 2.0),
        "top_p": number("top_p", 1.0, 1e-6, 1.0),
        "max_tokens": max_tokens,
        "seed": seed,
        "logprobs": bool(body.get("logprobs")),
        "top_logprobs": top_logprobs,
    }


class HFChatModel:
    """A Serve replica: one transformers model that completes chats (`complete(args) -> dict`)."""

    def __init__(self, model_path: str, dtype: str = "float32", max_model_len: int | None = None,
                 torch_threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ded_ray.models import resolve_model

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        started = time.perf_counter()
        model_path = str(resolve_model(model_path))  # on this replica's node: a name finds this node's copy
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        self.max_len = int(max_model_len or getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        eos = [self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)]
        self.eos_ids = sorted({int(e) for v in eos for e in (v if isinstance(v, (list, tuple)) else [v]) if e is not None})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        # The global torch RNG is seeded per request: one generation at a time per replica.
        self.lock = threading.Lock()
        log.info("serve hf: loaded %s in %.1fs", model_path, time.perf_counter() - started)

    async def complete(self, args: dict[str, Any]) -> dict[str, Any]:
        """Completion fields (text, finish_reason, token counts, logprobs) or {"error": {...}, "status"}."""
        try:
            return await asyncio.to_thread(self._complete, args)
        except RequestError as exc:
            return {"status": exc.status, "error": {"message": exc.message, "type": exc.kind, "code": exc.code}}

    def _complete(self, args: dict[str, Any]) -> dict[str, Any]:
        import torch

        prompt_ids = self.tokenizer.apply_chat_template(args["messages"], add_generation_prompt=True, tokenize=True)
        if hasattr(prompt_ids, "keys"):  # transformers 5 returns a BatchEncoding
            prompt_ids = prompt_ids["input_ids"]
        max_new = args["max_tokens"]
        if self.max_len is not None and len(prompt_ids) + max_new > self.max_len:
            raise RequestError(
                400,
                f"This model's maximum context length is {self.max_len} tokens; the prompt has {len(prompt_ids)} "
                f"tokens and max_tokens is {max_new}. Shorten the prompt or lower max_tokens.",
                "context_length_exceeded",
            )
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        sample = args["temperature"] > 0.0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new, do_sample=sample, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            return_dict_in_generate=True, output_logits=args["logprobs"],
        )
        if sample:
            kwargs.update(temperature=args["temperature"], top_p=args["top_p"], top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with self.lock, torch.inference_mode():
            if args["seed"] is not None:
                torch.manual_seed(args["seed"])
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        tokens = out.sequences[0, len(prompt_ids):].tolist()
        stop_at = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        count = len(tokens) if stop_at is None else stop_at + 1  # the stop token counts as generated
        body = tokens if stop_at is None else tokens[:stop_at]
        result = {
            "text": self.tokenizer.decode(body, skip_special_tokens=True),
            "finish_reason": "length" if stop_at is None else "stop",
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": count,
            "logprobs": None,
        }
        if args["logprobs"]:
            result["logprobs"] = self._logprobs(out.logits, tokens[:count], args["top_logprobs"])
        return result

    def _logprobs(self, logits, tokens: list[int], k: int) -> dict[str, Any]:
        """OpenAI `logprobs.content`: per generated token its logprob and the top k of the raw distribution."""
        import torch

        content = []
        for step, token in enumerate(tokens):
            logp = torch.log_softmax(logits[step][0].float(), dim=-1)
            entry = {"token": self.tokenizer.decode([token]), "logprob": _finite(logp[token]), "bytes": None,
                     "top_logprobs": []}
            if k:
                values, ids = logp.topk(k)
                entry["top_logprobs"] = [
                    {"token": self.tokenizer.decode([int(i)]), "logprob": _finite(v), "bytes": None}
                    for v, i in zip(values.tolist(), ids.tolist())
                ]
            content.append(entry)
        return {"content": content}

    def check_health(self) -> None:
        """Serve calls this periodically; a replica whose model is gone is restarted."""
        if self.model is None:
            raise RuntimeError("model not loaded")


def _finite(value) -> float:
    v = float(value)
    return v if math.isfinite(v) else -9999.0  # JSON has no -inf; OpenAI servers clamp the same way


app = FastAPI(title="ded_ray teachers (transformers)")


@serve.ingress(app)
class OpenAIRouter:
    """Ingress: checks the optional Bearer key, then routes each request to its model's deployment."""

    def __init__(self, models: dict[str, Any], api_key: Any = None):
        self.models = models  # model id -> DeploymentHandle of an HFChatModel
        self.api_key = api_key.get() if api_key is not None else None
        self.created = int(time.time())

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise RequestError(401, "invalid or missing API key: send `Authorization: Bearer <key>`",
                               "invalid_api_key", kind="authentication_error")

    @app.get("/v1/models")
    async def list_models(self, request: Request):
        try:
            self._authorize(request)
        except RequestError as exc:
            return exc.response()
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": self.created, "owned_by": "ded_ray"} for name in self.models
        ]}

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        try:
            self._authorize(request)
            try:
                body = await request.json()
            except ValueError:
                raise RequestError(400, "the request body is not JSON", "invalid_json") from None
            if not isinstance(body, dict):
                raise RequestError(400, "the request body must be a JSON object", "invalid_json")
            if body.get("stream"):
                raise RequestError(400, "stream=true is not supported by this server", "unsupported_stream")
            model = body.get("model")
            if model not in self.models:
                raise RequestError(404, f"model {model!r} is not served here; served: {sorted(self.models)}",
                                   "model_not_found")
            args = sampling_args(body)
        except RequestError as exc:
            return exc.response()
        result = await self.models[model].complete.remote(args)
        if "error" in result:
            return JSONResponse({"error": result["error"]}, status_code=result["status"])
        message: dict[str, Any] = {"role": "assistant", "content": result["text"]}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": result["finish_reason"],
                                  "logprobs": result["logprobs"]}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": result["prompt_tokens"],
                "completion_tokens": result["completion_tokens"],
                "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
            },
        }


def build_hf_app(
    models: dict[str, str],
    *,
    replicas: tuple[int, int] = (1, 1),
    cpus_per_replica: float = 1.0,
    api_key: Any = None,
    dtype: str = "float32",
    max_model_len: int | None = None,
):
    """The Serve application: `models` maps each served model id to a model folder or name (each replica resolves it).

    Ids that share a folder share one deployment (one set of replicas). `replicas=(min, max)` autoscales
    each deployment between min and max on ongoing requests; `api_key` (a `Secret`, or None) is the key
    clients must send as `Authorization: Bearer <key>`.
    """
    lo, hi = int(replicas[0]), int(replicas[1])
    if not 0 <= lo <= hi or hi < 1:
        raise ValueError(f"serve replicas must be (min, max) with 0 <= min <= max and max >= 1, got {replicas}")
    scaling: dict[str, Any] = (
        {"num_replicas": lo} if lo == hi
        else {"autoscaling_config": {"min_replicas": lo, "max_replicas": hi, "target_ongoing_requests": 1}}
    )
    threads = max(1, round(cpus_per_replica))
    by_folder: dict[str, Any] = {}
    handles: dict[str, Any] = {}
    for model_id, folder in models.items():
        if folder not in by_folder:
            deployment = serve.deployment(HFChatModel).options(
                name=f"model-{len(by_folder)}",
                ray_actor_options={"num_cpus": cpus_per_replica},
                max_ongoing_requests=4,  # one generates, a few wait: the queue signal for autoscaling
                health_check_period_s=30,
                **scaling,
            )
            by_folder[folder] = deployment.bind(folder, dtype=dtype, max_model_len=max_model_len, torch_threads=threads)
        handles[model_id] = by_folder[folder]
    # The router only forwards (awaits the model replicas): no CPU reservation, like ray.serve.llm's own
    # router, so a small machine keeps whole CPUs for the replicas and the Ray Data tasks of the clients.
    router = serve.deployment(OpenAIRouter).options(name="router", ray_actor_options={"num_cpus": 0})
    return router.bind(handles, api_key=api_key)
