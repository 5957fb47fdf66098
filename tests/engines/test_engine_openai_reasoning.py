"""The openai engine keeps a teacher's split-off reasoning, streamed (SSE) or not.

Default tier, no model: the real `OpenAIChatClient` called on a plain batch against scripted servers on
127.0.0.1 — the JSON server of test_engine_openai.py, and here an event-stream server that writes real SSE
framing in small TCP writes (split mid-word, mid-line and mid-JSON) over HTTP/1.1 chunked encoding, so it can
also drop a connection mid-chunk like a proxy does. The reasoning arrives as DeepSeek's and older vLLM's
`reasoning_content` or newer vLLM's `reasoning`; the rows must be the same streamed or not, and pass the
strict `<think>` format check verification applies when `verify.require_think` is on.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from test_engine_openai import ScriptedServer, batch, client, completion  # the JSON server and helpers

from ded_ray import schema as S
from ded_ray.config import RolloutConfig, SamplingConfig
from ded_ray.engines.openai import client_kwargs, parse_completion, request_body, with_reasoning
from ded_ray.engines.sse import sse_data
from ded_ray.stages.diversity import think_part
from ded_ray.stages.to_sft import assistant_content
from ded_ray.verifiers.format import format_ok

REASONING = "Okay, so 2 + 2: two pairs make four.\nLet me double-check: 1+1+1+1 = 4.\n"
ANSWER = "\n\nThe answer is \\boxed{4}."
EXPECTED = ("<think>\nOkay, so 2 + 2: two pairs make four.\nLet me double-check: 1+1+1+1 = 4.\n</think>\n\n"
            "The answer is \\boxed{4}.")


# --- scripted replies -----------------------------------------------------------------------------------


def reasoning_completion(reasoning: str, content: str | None, field: str = "reasoning_content", finish: str = "stop",
                         tokens: int = 30, logprobs=None) -> dict:
    """A non-streamed chat completion whose message carries the reasoning in `field`, as vLLM's
    `--reasoning-parser deepseek_r1` splits an R1 output (reasoning before `</think>`, the rest as content)."""
    body = completion(content, finish, tokens, logprobs)
    body["choices"][0]["message"][field] = reasoning
    return body


def pieces_of(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream_chunks(reasoning: str, content: str, field: str = "reasoning_content", finish: str = "stop",
                  tokens: int | None = 30, logprobs=None, piece: int = 5) -> list[dict]:
    """The chunks a server streams for that completion: a role delta, reasoning deltas, content deltas, a
    finish chunk, then (with include_usage) a choice-less usage chunk. Deltas cut text every `piece` chars;
    `logprobs` entries go one per text chunk, the rest on the last (a chunk holds one token or more)."""
    def chunk(delta: dict, finish_reason=None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}

    texts = [chunk({field: p, "content": None}) for p in pieces_of(reasoning, piece)]
    texts += [chunk({"content": p}) for p in pieces_of(content, piece)]
    steps = list((logprobs or {}).get("content") or [])
    for i, c in enumerate(texts if steps else []):
        c["choices"][0]["logprobs"] = {"content": steps[i:i + 1] if i < len(texts) - 1 else steps[i:]}
    chunks = [chunk({"role": "assistant", "content": ""}), *texts, chunk({}, finish_reason=finish)]
    if tokens is not None:
        chunks.append({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [],
                       "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}})
    return chunks


def sse_text(chunks: list, done: bool = True, newline: str = "\n") -> str:
    events = [f"data: {c if isinstance(c, str) else json.dumps(c)}" for c in chunks]
    events.insert(1, ": keep-alive")  # a comment, as proxies send during a long silence
    text = "".join(e + newline + newline for e in events)
    return text + (f"data: [DONE]{newline}{newline}" if done else "")


class Reply:
    """One scripted answer: a status + JSON body, or a 200 event stream written in `write_size`-byte
    pieces; `cut_after` bytes then a dropped connection (mid-chunk); `stall_s` of silence before the end."""

    def __init__(self, stream: str | None = None, status: int = 200, body: dict | None = None,
                 write_size: int = 7, cut_after: int | None = None, stall_s: float = 0.0):
        self.stream, self.status, self.body = stream, status, body
        self.write_size, self.cut_after, self.stall_s = write_size, cut_after, stall_s


class StreamServer:
    """POST /v1/chat/completions answered with the next scripted `Reply` (the last one repeats)."""

    def __init__(self, *script: Reply):
        self.script = list(script)
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked encoding: a cut mid-chunk is a broken body, not an end

            def do_POST(self):
                owner.requests.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                reply = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                if reply.stream is None:
                    return self.send_json(reply.status, reply.body or {})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                data = reply.stream.encode()
                if reply.cut_after is not None:  # announce the whole body as one chunk, send part, hang up
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data[:reply.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for piece in pieces_of(data, reply.write_size):
                    self.write_chunk(piece)
                time.sleep(reply.stall_s)
                self.wfile.write(b"0\r\n\r\n")

            def write_chunk(self, data: bytes):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def send_json(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that hangs up on a cut or stalled stream is what these tests do on purpose


@pytest.fixture
def streaming():
    servers = []

    def make(*script: Reply) -> StreamServer:
        server = StreamServer(*script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def plain():
    servers = []

    def make(*script) -> ScriptedServer:
        server = ScriptedServer(list(script))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def rows(url: str, stream: bool, n: int = 1, **kw) -> pd.DataFrame:
    return client(url, stream=stream, **kw)(batch(n))


def generation(df: pd.DataFrame) -> list[dict]:
    """The generation columns of each row, NaN-free (for exact comparison)."""
    cols = [S.RESPONSE, S.NUM_TOKENS, S.FINISH_REASON, S.TOKEN_ENTROPY, S.ERROR]
    return [{c: (None if pd.isna(r[c]) else r[c]) for c in cols} for _, r in df.iterrows()]


LOGPROBS = {"content": [{"token": f"t{i}", "logprob": -0.2 - i / 10,
                         "top_logprobs": [{"token": "a", "logprob": -0.2 - i / 10}, {"token": "b", "logprob": -1.9}]}
                        for i in range(12)]}


# --- rebuilding the response ------------------------------------------------------------------------------


def test_with_reasoning_joins_like_the_qwen3_template():
    assert with_reasoning(ANSWER, REASONING) == EXPECTED
    assert with_reasoning("C", "R") == "<think>\nR\n</think>\n\nC"
    assert with_reasoning("plain answer", "") == "plain answer"  # no reasoning field: unchanged
    assert with_reasoning("plain answer", " \n ") == "plain answer"  # a blank one too
    assert with_reasoning("<think>\nR\n</think>\n\nC", "R") == "<think>\nR\n</think>\n\nC"  # never doubled
    assert with_reasoning("", "R, then the length limit") == "<think>\nR, then the length limit"  # left open


def test_with_reasoning_matches_the_qwen3_templates_own_render(shared_data):
    """The assistant turn the Qwen3 template renders from {content, reasoning_content} is our response."""
    import jinja2

    source = (shared_data / "chat_templates" / "Qwen-Qwen3-0.6B.jinja").read_text()
    template = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).from_string(source)
    chat = [{"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}]
    rendered = template.render(messages=chat, add_generation_prompt=False)
    turn = rendered.split("<|im_start|>assistant\n", 1)[1].split("<|im_end|>", 1)[0]
    assert turn == with_reasoning(ANSWER, REASONING) == EXPECTED


def test_a_real_r1_trace_split_by_the_reasoning_parser_is_rebuilt_exactly(shared_data):
    """vLLM's deepseek_r1 parser on an R1 output after the `<think>\\n` generation prompt: reasoning is the
    text before `</think>`, content the rest. Rebuilt, it is the model's text with its opening tag."""
    with open(shared_data / "reasoning_traces_thought_anchors" / "math_traces.jsonl") as f:
        completions = [json.loads(next(f))["traces"][0]["completion"] for _ in range(3)]
    for text in completions:
        reasoning, _, content = text.partition("</think>")
        row = parse_completion(reasoning_completion(reasoning, content))
        assert row[S.RESPONSE] == "<think>\n" + text
        assert format_ok(row[S.RESPONSE], require_think=True)


# --- non-streamed --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_non_streamed_reasoning_is_kept(plain, field):
    server = plain((200, reasoning_completion(REASONING, ANSWER, field), {}))
    out = rows(server.url, stream=False)
    assert out[S.RESPONSE].iloc[0] == EXPECTED and out[S.NUM_TOKENS].iloc[0] == 30
    assert "stream" not in server.requests[0][1]


def test_both_fields_with_the_same_text_are_taken_once(plain):
    body = reasoning_completion(REASONING, ANSWER, "reasoning")
    body["choices"][0]["message"]["reasoning_content"] = REASONING  # vLLM during its rename sent both
    assert rows(plain((200, body, {})).url, stream=False)[S.RESPONSE].iloc[0] == EXPECTED


def test_no_reasoning_field_leaves_the_response_unchanged(plain, streaming):
    text = "<think>\nthe server kept the block in content\n</think>\n\n4"
    assert rows(plain((200, completion(text), {})).url, stream=False)[S.RESPONSE].iloc[0] == text
    server = streaming(Reply(sse_text(stream_chunks("", text))))
    assert rows(server.url, stream=True)[S.RESPONSE].iloc[0] == text


# --- streamed ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_streamed_rows_equal_non_streamed_rows(plain, streaming, field):
    sampling = SamplingConfig(max_tokens=64, logprobs=2).model_dump()
    whole = plain((200, reasoning_completion(REASONING, ANSWER, field, tokens=12, logprobs=LOGPROBS), {}))
    sse = streaming(Reply(sse_text(stream_chunks(REASONING, ANSWER, field, tokens=12, logprobs=LOGPROBS)),
                          write_size=7))  # TCP writes split words, lines and JSON
    expected = generation(rows(whole.url, stream=False, n=2, sampling=sampling))
    got = generation(rows(sse.url, stream=True, n=2, sampling=sampling))
    assert got == expected
    assert got[0][S.RESPONSE] == EXPECTED and got[0][S.NUM_TOKENS] == 12 and got[0][S.TOKEN_ENTROPY] > 0
    sent = sse.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2


def test_stream_with_crlf_lines_and_a_length_cut(streaming):
    text = sse_text(stream_chunks(REASONING, "", finish="length", tokens=64), newline="\r\n")
    out = rows(streaming(Reply(text, write_size=3)).url, stream=True)
    assert out[S.RESPONSE].iloc[0] == "<think>\n" + REASONING.strip("\n")  # never closed: left open
    assert out[S.FINISH_REASON].iloc[0] == "length" and out[S.NUM_TOKENS].iloc[0] == 64
    assert not format_ok(out[S.RESPONSE].iloc[0], require_think=True)


def test_stream_without_usage_counts_logprobs_then_text_chunks(streaming):
    chunks = stream_chunks("R" * 8, "C" * 6, tokens=None, piece=2)  # 4 reasoning + 3 content chunks
    assert rows(streaming(Reply(sse_text(chunks))).url, stream=True)[S.NUM_TOKENS].iloc[0] == 7
    chunks = stream_chunks("R" * 8, "C" * 6, tokens=None, piece=2, logprobs=LOGPROBS)
    out = rows(streaming(Reply(sse_text(chunks))).url, stream=True,
               sampling=SamplingConfig(max_tokens=64, logprobs=2).model_dump())
    assert out[S.NUM_TOKENS].iloc[0] == len(LOGPROBS["content"])  # as the non-streamed fallback counts


def test_streamed_response_passes_the_strict_think_check(streaming):
    out = rows(streaming(Reply(sse_text(stream_chunks(REASONING, ANSWER, "reasoning")))).url, stream=True)
    response = out[S.RESPONSE].iloc[0]
    assert format_ok(response, require_think=True)  # what verify stores in format_ok with require_think
    assert assistant_content(response) == response  # to_sft has no opening tag to restore
    assert think_part(response).strip() == REASONING.strip()  # diversity's compare="think" sees the reasoning


# --- streamed failures ---------------------------------------------------------------------------------


def test_a_connection_dropped_mid_stream_is_retried(streaming):
    full = sse_text(stream_chunks(REASONING, ANSWER))
    server = streaming(Reply(full, cut_after=len(full) // 2), Reply(full))
    out = rows(server.url, stream=True)
    assert out[S.RESPONSE].iloc[0] == EXPECTED and pd.isna(out[S.ERROR].iloc[0])
    assert len(server.requests) == 2  # the cut try and the retry; nothing partial kept


def test_a_stream_always_cut_gives_connection_error_rows(streaming):
    full = sse_text(stream_chunks(REASONING, ANSWER))
    server = streaming(Reply(full, cut_after=len(full) // 3))
    out = rows(server.url, stream=True, n=2, max_retries=1)
    assert list(out[S.ERROR]) == ["connection_error"] * 2 and out[S.RESPONSE].isna().all()
    assert len(server.requests) == 4  # two rows, each first try + 1 retry


def test_a_stream_closed_cleanly_before_done_is_a_cut(streaming):
    chunks = stream_chunks(REASONING, ANSWER)[:-2]  # no finish chunk, no usage, no [DONE]
    server = streaming(Reply(sse_text(chunks, done=False)))
    out = rows(server.url, stream=True, max_retries=1)
    assert out[S.ERROR].iloc[0] == "connection_error" and len(server.requests) == 2


def test_a_stalled_stream_times_out(streaming):
    server = streaming(Reply(sse_text(stream_chunks(REASONING, ANSWER), done=False), stall_s=1.5))
    out = rows(server.url, stream=True, max_retries=0, timeout_s=0.4)
    assert out[S.ERROR].iloc[0] == "timeout"


def test_a_malformed_chunk_is_bad_response_and_not_retried(streaming):
    chunks = stream_chunks(REASONING, ANSWER)
    chunks.insert(3, '{"choices": [{"index": 0, "delta": {"content": "tru')
    server = streaming(Reply(sse_text(chunks)))
    out = rows(server.url, stream=True)
    assert out[S.ERROR].iloc[0] == "bad_response" and len(server.requests) == 1


@pytest.mark.parametrize(("status", "error", "tries"), [(503, "http_503", 3), (400, "http_400", 1)])
def test_http_errors_before_the_stream_follow_the_retry_policy(streaming, status, error, tries):
    server = streaming(Reply(status=status, body={"error": {"message": "no", "code": status}}))
    out = rows(server.url, stream=True, max_retries=2)
    assert out[S.ERROR].iloc[0] == error and len(server.requests) == tries


def test_context_length_400_before_the_stream_is_prompt_too_long(streaming):
    body = {"error": {"message": "This model's maximum context length is 8 tokens", "code": 400}}
    assert rows(streaming(Reply(status=400, body=body)).url, stream=True)[S.ERROR].iloc[0] == "prompt_too_long"


@pytest.mark.parametrize(("error", "slug", "tries"), [
    ({"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}, "http_500", 2),
    ({"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}, "http_400", 1),  # older vLLM
    ({"error": {"message": "odd"}}, "bad_response", 1),
])
def test_an_error_inside_the_stream_maps_like_its_status(streaming, error, slug, tries):
    chunks = stream_chunks(REASONING, ANSWER)[:4] + [error]
    server = streaming(Reply(sse_text(chunks)))
    out = rows(server.url, stream=True, max_retries=1)
    assert out[S.ERROR].iloc[0] == slug and len(server.requests) == tries


def test_a_server_that_ignores_stream_true_is_read_whole(plain):
    server = plain((200, reasoning_completion(REASONING, ANSWER), {}))
    out = rows(server.url, stream=True)
    assert out[S.RESPONSE].iloc[0] == EXPECTED and server.requests[0][1]["stream"] is True


# --- SSE framing and wiring ------------------------------------------------------------------------------


def sse_events(lines: list[str]) -> list[str]:
    import asyncio

    async def collect():
        async def source():
            for line in lines:
                yield line

        return [d async for d in sse_data(source())]

    return asyncio.run(collect())


def test_sse_framing():
    assert sse_events(["data: a", "data:b", "", ": ping", "", "event: x", "data: c", "id: 1", ""]) == ["a\nb", "c"]
    assert sse_events(["data: first", "", "data: cut mid-ev"]) == ["first"]  # an event the stream ended inside
    assert sse_events(["\ufeffdata: x\r", "\r", "data:  two spaces", ""]) == ["x", " two spaces"]


def test_stream_is_a_rollout_option_passed_to_the_client():
    assert RolloutConfig().stream is False
    kwargs = client_kwargs("http://h:1/v1", "m", SamplingConfig(), RolloutConfig(stream=True), None)
    assert kwargs["stream"] is True
    assert "stream" not in request_body("m", [], SamplingConfig(), None)
