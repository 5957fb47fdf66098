"""The openai engine: request/response handling against real local HTTP servers.

Default tier: the client actor called on a plain batch (no Ray) against a scripted HTTP server on
127.0.0.1 (429/5xx retries, 4xx error rows, a down endpoint, the Bearer header) — a real socket and
HTTP stack, no mock objects. Engine tier: the project's own Serve teacher (transformers app, tiny model)
answering plain httpx / openai-client requests and a full `rollout(..., engine="openai")` through Ray.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import RolloutConfig, SamplingConfig, SmokeConfig, TeacherConfig
from ded_ray.engines.entropy import mean_entropy_bits, openai_steps
from ded_ray.engines.openai import (
    OpenAIChatClient,
    OpenAIEngine,
    chat_url,
    parse_completion,
    read_api_key,
    request_body,
)

KEY_ENV = "DED_TEST_TEACHER_KEY"


# --- a scripted OpenAI-style server (real HTTP on loopback) -------------------------------------------


def completion(text: str = "4", finish: str = "stop", tokens: int = 2, logprobs=None) -> dict:
    return {
        "id": "x", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                     "logprobs": logprobs}],
        "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens},
    }


class ScriptedServer:
    """Answers POST /v1/chat/completions with the next scripted (status, body, headers); records requests."""

    def __init__(self, script: list[tuple[int, dict | str, dict]]):
        self.script = list(script)
        self.requests: list[tuple[dict, dict]] = []  # (headers, json body)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                owner.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status, payload, headers = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(*script):
        server = ScriptedServer(list(script))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def batch(n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({
        S.ROLLOUT_ID: [f"p{i}#t#0" for i in range(n)],
        S.SEED: [1000 + i for i in range(n)],
        S.PROMPT: ["rendered"] * n,
        "prompt_messages": [json.dumps([{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": f"What is {i} + 1?"}]) for i in range(n)],
    })


def client(url: str, **kw) -> OpenAIChatClient:
    args = dict(endpoint=url, model="m", sampling=SamplingConfig(max_tokens=8).model_dump(), max_retries=2,
                retry_backoff_s=0.01, timeout_s=5.0)
    args.update(kw)
    return OpenAIChatClient(**args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- default tier --------------------------------------------------------------------------------------


def test_request_body_sends_messages_seed_and_logprobs():
    messages = [{"role": "user", "content": "hi"}]
    body = request_body("m", messages, SamplingConfig(temperature=0.5, top_p=0.9, max_tokens=7, logprobs=3), 42)
    assert body == {"model": "m", "messages": messages, "n": 1, "temperature": 0.5, "top_p": 0.9, "max_tokens": 7,
                    "seed": 42, "logprobs": True, "top_logprobs": 3}
    assert "logprobs" not in request_body("m", messages, SamplingConfig(), None)
    assert "seed" not in request_body("m", messages, SamplingConfig(), None)


def test_chat_url_needs_a_v1_base():
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    with pytest.raises(ValueError, match="ending in /v1"):
        chat_url("http://h:1/")


def test_parse_completion_entropy_matches_numpy():
    top = [[-0.1, -2.5, -3.0], [-0.7, -0.8, -4.0]]
    logprobs = {"content": [{"token": "a", "logprob": t[0], "top_logprobs": [{"token": str(j), "logprob": v}
                                                                              for j, v in enumerate(t)]} for t in top]}
    row = parse_completion(completion("ab", "length", 2, logprobs))
    expected = []
    for t in top:
        p = np.exp(t) / np.exp(t).sum()
        expected.append(-(p * np.log2(p)).sum())
    assert row[S.RESPONSE] == "ab" and row[S.FINISH_REASON] == "length" and row[S.NUM_TOKENS] == 2
    assert row[S.TOKEN_ENTROPY] == pytest.approx(float(np.mean(expected)), rel=1e-9)
    assert mean_entropy_bits(openai_steps(logprobs)) == pytest.approx(row[S.TOKEN_ENTROPY])
    assert parse_completion({"choices": []})[S.ERROR] == "bad_response"


def test_uniform_top_k_has_log2_k_bits():
    assert mean_entropy_bits([[math.log(0.25)] * 4]) == pytest.approx(2.0)
    assert mean_entropy_bits([]) is None


def test_api_key_error_names_the_variable_and_secret_hides_the_value(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=KEY_ENV):
        read_api_key(KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "sk-very-secret")
    key = read_api_key(KEY_ENV)
    assert key.get() == "sk-very-secret"
    assert "very-secret" not in repr(key) and "very-secret" not in str(key) and "very-secret" not in repr([key])
    assert read_api_key(None) is None


def test_success_sends_seed_messages_and_bearer_key(scripted, monkeypatch):
    server = scripted((200, completion("five", "stop", 3), {}))
    monkeypatch.setenv(KEY_ENV, "k-123")
    out = client(server.url, api_key_env=KEY_ENV)(batch(2))
    assert list(out[S.RESPONSE]) == ["five", "five"]
    assert list(out[S.NUM_TOKENS]) == [3, 3] and out[S.ERROR].isna().all()
    assert out[S.TOKEN_ENTROPY].isna().all()  # no logprobs asked
    sent = sorted(server.requests, key=lambda r: r[1]["seed"])
    assert [b["seed"] for _, b in sent] == [1000, 1001]
    assert sent[0][1]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert all(h["authorization"] == "Bearer k-123" for h, _ in sent)


def test_429_and_503_are_retried_then_succeed(scripted):
    server = scripted((429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
                      (503, {"error": {"message": "busy"}}, {}),
                      (200, completion("ok"), {}))
    out = client(server.url, max_retries=3)(batch(1))
    assert out[S.RESPONSE].iloc[0] == "ok" and pd.isna(out[S.ERROR].iloc[0])
    assert len(server.requests) == 3


def test_5xx_exhausting_retries_gives_an_error_row(scripted):
    server = scripted((503, {"error": {"message": "down"}}, {}))
    out = client(server.url, max_retries=2)(batch(1))
    assert out[S.ERROR].iloc[0] == "http_503" and out[S.FINISH_REASON].iloc[0] == "error"
    assert len(server.requests) == 3  # first try + 2 retries


def test_4xx_is_not_retried(scripted):
    server = scripted((400, {"error": {"message": "bad"}}, {}))
    out = client(server.url)(batch(2))
    assert list(out[S.ERROR]) == ["http_400", "http_400"]
    assert len(server.requests) == 2  # one per row, no retry
    assert out[S.NUM_TOKENS].dtype == "int32" and out[S.RESPONSE].isna().all()


def test_context_length_400_is_prompt_too_long(scripted):
    server = scripted((400, {"error": {"message": "This model's maximum context length is 8 tokens",
                                       "code": "context_length_exceeded"}}, {}))
    out = client(server.url)(batch(1))
    assert out[S.ERROR].iloc[0] == "prompt_too_long"


def test_endpoint_down_gives_connection_error_rows():
    out = client(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)(batch(3))
    assert list(out[S.ERROR]) == ["connection_error"] * 3
    assert list(out[S.ROLLOUT_ID]) == [f"p{i}#t#0" for i in range(3)]  # input columns kept, order kept


def test_bounded_concurrency(scripted):
    server = scripted((200, completion(), {}))
    out = client(server.url, max_concurrent_requests=1)(batch(5))
    assert len(out) == 5 and out[S.ERROR].isna().all() and len(server.requests) == 5


def test_engine_requires_an_endpoint():
    with pytest.raises(ValueError, match="endpoint"):
        OpenAIEngine().generate(None, "m", SamplingConfig(), RolloutConfig(), endpoint=None)


# --- engine tier: the project's own Serve teacher ------------------------------------------------------


@pytest.fixture(scope="module")
def served(ray_local):
    """A transformers teacher (tiny model) on Serve at 127.0.0.1:<free port>, with an API key."""
    from ded_ray.models import build_tiny_model
    from ded_ray.serve.deploy import serve_teachers, shutdown_teachers

    os.environ[KEY_ENV] = "test-key-1"
    tiny = str(build_tiny_model())
    smoke = SmokeConfig(port=free_port(), serve_engine="hf", serve_api_key_env=KEY_ENV)
    teacher = TeacherConfig(name="tiny", model=tiny, sampling=SamplingConfig(max_tokens=12, logprobs=4))
    urls = serve_teachers([teacher], smoke)
    yield {"url": urls["tiny"], "model": tiny, "teacher": teacher}
    shutdown_teachers(stop_serve=True)
    os.environ.pop(KEY_ENV, None)


def _chat(url: str, model: str, key: str | None, **extra):
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 6, **extra}
    return httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=120)


@pytest.mark.engine
def test_serve_teacher_answers_plain_http(served):
    import httpx

    models = httpx.get(f"{served['url']}/models", headers={"Authorization": "Bearer test-key-1"}, timeout=30).json()
    assert [m["id"] for m in models["data"]] == [served["model"]]
    r = _chat(served["url"], served["model"], "test-key-1", seed=7, temperature=0.8, logprobs=True, top_logprobs=3)
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert 1 <= body["usage"]["completion_tokens"] <= 6
    assert len(choice["logprobs"]["content"]) == body["usage"]["completion_tokens"]
    assert all(len(t["top_logprobs"]) == 3 for t in choice["logprobs"]["content"])
    again = _chat(served["url"], served["model"], "test-key-1", seed=7, temperature=0.8).json()
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]  # same seed, same sample


@pytest.mark.engine
def test_serve_teacher_rejects_bad_key_and_unknown_model(served):
    assert _chat(served["url"], served["model"], "wrong-key").status_code == 401
    assert _chat(served["url"], served["model"], None).status_code == 401
    r = _chat(served["url"], "no-such-model", "test-key-1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert _chat(served["url"], served["model"], "test-key-1", n=2).status_code == 400


@pytest.mark.engine
def test_serve_teacher_answers_the_openai_client(served):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=served["url"], api_key="test-key-1", max_retries=0, timeout=120)
    out = api.chat.completions.create(model=served["model"], messages=[{"role": "user", "content": "Hi"}],
                                      max_tokens=5, seed=1, temperature=0.7)
    assert out.choices[0].message.role == "assistant" and out.usage.completion_tokens >= 1
    assert [m.id for m in api.models.list().data] == [served["model"]]


@pytest.mark.engine
def test_rollout_through_the_openai_engine(served):
    from ded_ray.stages.rollout import rollout

    problems = [{S.PROBLEM_ID: f"q{i}", S.DOMAIN: "math", S.QUESTION: f"What is {i} + {i + 2}?",
                 S.ANSWER: str(2 * i + 2), S.TESTS: "", S.SOURCE: "generated", S.META: "{}"} for i in range(5)]
    teacher = served["teacher"].model_copy(update={"endpoint": served["url"], "api_key_env": KEY_ENV})
    config = RolloutConfig(engine="openai", samples_per_question=2, batch_size=4, max_concurrent_requests=2)
    df = rollout(problems, [teacher], config).to_pandas()
    assert len(df) == 10
    assert df[S.ROLLOUT_ID].is_unique and df[S.SEED].is_unique
    assert df[S.ERROR].isna().all(), df[S.ERROR].value_counts()
    assert (df[S.NUM_TOKENS] >= 1).all() and (df[S.NUM_TOKENS] <= 12).all()
    assert df[S.TOKEN_ENTROPY].notna().all() and (df[S.TOKEN_ENTROPY] >= 0).all()
    assert (df[S.TOKEN_ENTROPY] <= math.log2(4) + 1e-9).all()  # top-4 renormalised: at most 2 bits
    assert set(df[S.FINISH_REASON]) <= {"stop", "length"}


@pytest.mark.engine
def test_rollout_against_a_down_endpoint_gives_error_rows(ray_local):
    from ded_ray.stages.rollout import rollout

    problems = [{S.PROBLEM_ID: f"q{i}", S.DOMAIN: "math", S.QUESTION: f"What is {i} + 1?", S.ANSWER: str(i + 1),
                 S.TESTS: "", S.SOURCE: "generated", S.META: "{}"} for i in range(3)]
    teacher = TeacherConfig(name="down", model="smollm2-135m", endpoint=f"http://127.0.0.1:{free_port()}/v1")
    config = RolloutConfig(engine="openai", samples_per_question=2, max_retries=1, retry_backoff_s=0.01)
    df = rollout(problems, [teacher], config).to_pandas()
    assert len(df) == 6 and set(df[S.ERROR]) == {"connection_error"}
    assert set(df[S.FINISH_REASON]) == {"error"}
