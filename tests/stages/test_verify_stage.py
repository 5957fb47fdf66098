"""The verify stage on plain DataFrames, through Ray Data, and with a real local LLM-judge server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import VerifyConfig
from ded_ray.stages.verify import VerifyStage, verify_rows
from ded_ray.verifiers.format import format_ok, length_ok
from ded_ray.verifiers.registry import SPECS, VERIFIER_KINDS

CODE_TESTS = json.dumps([{"type": "stdin", "input": "2 3\n", "output": "5\n"}])
GOOD_CODE = "<think>add them</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def rollouts() -> pd.DataFrame:
    rows = [
        # domain, answer, tests, response, error
        ("math", "\\frac{1}{2}", "", "<think>hm</think> so the answer is $\\boxed{0.5}$.", None),
        ("math", "3", "", "<think>hm</think> so the answer is $\\boxed{4}$.", None),
        ("math", "3", "", "<think>hm</think> I give up.", None),
        ("math", "5", "", "<think>x</think> $\\boxed{10^{10^{10}}}$", None),
        ("science", "42", "", "The answer is 42.", None),
        ("code", "", CODE_TESTS, GOOD_CODE, None),
        ("code", "", CODE_TESTS, "```python\nprint(6)\n```", None),
        ("code", "", CODE_TESTS, "```python\nwhile True: pass\n```", None),
        ("math", "3", "", "", "engine crashed: CUDA OOM"),
        ("poetry", "", "", "roses", None),
    ]
    df = pd.DataFrame(rows, columns=[S.DOMAIN, S.ANSWER, S.TESTS, S.RESPONSE, S.ERROR])
    df[S.PROBLEM_ID] = [f"p{i}" for i in range(len(df))]
    df[S.NUM_TOKENS] = [10] * (len(df) - 1) + [99999]
    return df


EXPECTED = ["correct", "wrong", "unparsable", "timeout", "correct", "correct", "wrong", "timeout", "error",
            "error"]


@pytest.fixture(scope="module")
def stage():
    s = VerifyStage({"math_timeout_s": 2.0, "code_timeout_s": 2.0, "require_think": True, "max_tokens": 100})
    yield s
    s.pool.close()


def test_stage_labels_every_row_and_drops_none(stage):
    batch = rollouts()
    out = stage(batch)
    assert len(out) == len(batch) and list(out[S.PROBLEM_ID]) == list(batch[S.PROBLEM_ID])
    assert list(out[S.VERDICT]) == EXPECTED, list(zip(out[S.VERDICT], out[S.VERDICT_DETAIL]))
    assert "engine crashed" in out[S.VERDICT_DETAIL].iloc[8]
    assert "unknown domain" in out[S.VERDICT_DETAIL].iloc[9]
    assert out[S.EXTRACTED_ANSWER].iloc[0] == "0.5"
    assert list(out[S.FORMAT_OK]) == [True, True, True, True, False, True, False, False, False, False]
    assert list(out[S.LENGTH_OK]) == [True] * 9 + [False]  # from num_tokens when no tokenizer is given
    assert (out[S.VERIFY_MS] >= 0).all()
    assert set(stage.writes) <= set(out.columns)
    assert S.REJECT_REASON not in out  # verify labels; the correctness stage rejects


def test_every_registered_domain_has_a_verifier(stage):
    assert set(stage.verifiers) == set(VERIFIER_KINDS)
    assert {spec.verifier for spec in SPECS.values()} <= set(VERIFIER_KINDS)
    assert {spec.needs for spec in SPECS.values()} <= {S.ANSWER, S.TESTS}  # problem columns the readers check


def test_stage_names_itself_when_columns_are_missing(stage):
    with pytest.raises(Exception, match="verify"):
        stage(pd.DataFrame({S.DOMAIN: ["math"]}))


def code_rows(responses, tests, metas=None) -> pd.DataFrame:
    df = pd.DataFrame({S.DOMAIN: "code", S.TESTS: tests, S.RESPONSE: responses})
    if metas is not None:
        df[S.META] = metas
    return df


def test_code_limits_from_each_rows_meta_else_the_config():
    stage = VerifyStage({"code_timeout_s": 10.0, "code_test_timeout_s": 2.0})
    try:
        loop, hog = "```python\nwhile True: pass\n```", "```python\nx = bytearray(300 * 2 ** 20)\nprint(5)\n```"
        metas = [json.dumps({"time_limit_s": 1}), "", None, json.dumps({"memory_limit_mb": 256}), "{}"]
        started = time.monotonic()
        out = stage(code_rows([loop, loop, loop, hog, hog], CODE_TESTS, metas))
        elapsed = time.monotonic() - started
    finally:
        stage.pool.close()
    details = list(out[S.VERDICT_DETAIL])
    assert list(out[S.VERDICT]) == ["timeout", "timeout", "timeout", "wrong", "correct"], details
    assert "1 s per test" in details[0] and all("2 s per test" in d for d in details[1:3]), details
    assert "MemoryError" in details[3] and "256 MB" in details[3] and "2048 MB" in details[4], details
    assert elapsed < 30  # 1 + 2 + 2 s of loops, not 3 x 10 s
    no_meta = VerifyStage({"code_test_timeout_s": 1.0})  # no meta column at all: the config's limits
    try:
        assert "1 s per test" in no_meta(code_rows([loop], CODE_TESTS))[S.VERDICT_DETAIL].iloc[0]
    finally:
        no_meta.pool.close()


def test_code_all_tests_runs_past_the_first_failure():
    tests = json.dumps([{"type": "stdin", "input": f"{i}\n", "output": f"{i}\n"} for i in range(4)])
    wrong = "```python\nprint(int(input()) + (1 if input.__name__ else 0))\n```"  # wrong on every test
    for all_tests, head in ((False, "1/4 tests run: wrong ("), (True, "4/4 tests run: wrong x4 (")):
        stage = VerifyStage({"code_all_tests": all_tests})
        try:
            out = stage(code_rows([wrong], tests))
        finally:
            stage.pool.close()
        assert out[S.VERDICT].iloc[0] == "wrong" and out[S.VERDICT_DETAIL].iloc[0].startswith(head), \
            out[S.VERDICT_DETAIL].iloc[0]


def test_format_and_length_checks():
    assert format_ok("<think>a</think>b") and format_ok("a</think>b")  # R1 template opens the block
    assert not format_ok("<think>a</think><think>b</think>c") and not format_ok("<think>a</think>")
    assert not format_ok("plain answer") and format_ok("plain answer", require_think=False)
    assert not format_ok("<think>a", require_think=False)
    words = str.split  # a tokenizer is anything with .encode or a str -> tokens callable
    assert length_ok("a b c", 3, words) and not length_ok("a b c d", 3, words)


@pytest.mark.engine  # builds a model folder with the real SmolLM2 tokenizer (~30 s on a busy machine)
def test_length_ok_with_the_student_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ded_ray.models import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    text = "hello world " * 20
    n = len(tokenizer.encode(text, add_special_tokens=False))
    assert length_ok(text, n, tokenizer) and not length_ok(text, n - 1, tokenizer)


def test_stage_through_ray_data(ray_local, capfd):
    import ray

    batch = rollouts().iloc[[0, 1, 2, 5, 6, 8]].reset_index(drop=True)
    config = VerifyConfig(math_timeout_s=5.0, code_timeout_s=5.0, batch_size=3, concurrency=(1, 1))
    out = verify_rows(ray.data.from_pandas(batch), config).to_pandas().set_index(S.PROBLEM_ID).loc[batch[S.PROBLEM_ID]]
    assert list(out[S.VERDICT]) == ["correct", "wrong", "unparsable", "correct", "wrong", "error"]
    # actors Ray does not restart (run_stage redoes a stage that lost one): Ray logs no error-level line
    # about restartable actors whose constructor arguments sit in the object store
    assert "core_worker.cc" not in capfd.readouterr().err


JUDGE_SERVER = textwrap.dedent('''
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][0]["content"]
            # a deterministic "model": the answer 'three' means 3
            reply = "YES" if "three" in prompt.split("Student's final answer:")[1] else "NO"
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Judge).serve_forever()
''')


@pytest.fixture
def judge_endpoint(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "judge_server.py"
    script.write_text(JUDGE_SERVER)
    process = subprocess.Popen([sys.executable, str(script), str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/v1"
    process.kill()
    process.wait()


def test_llm_judge_fallback_on_a_real_local_server(judge_endpoint):
    stage = VerifyStage({"judge_endpoint": judge_endpoint, "judge_model": "tiny-judge"})
    try:
        batch = pd.DataFrame({
            S.DOMAIN: ["math", "math", "math"],
            S.ANSWER: ["3", "3", "3"],
            S.QUESTION: ["1+2?"] * 3,
            S.RESPONSE: ["The answer is three.", "so the answer is $\\boxed{4}$", "$\\boxed{3}$"],
        })
        out = stage(batch)
    finally:
        stage.pool.close()
    assert list(out[S.VERDICT]) == ["correct", "wrong", "correct"]
    assert "llm-judge (tiny-judge): YES" in out[S.VERDICT_DETAIL].iloc[0]
    assert "llm-judge" in out[S.VERDICT_DETAIL].iloc[1]
    assert "math-verify" in out[S.VERDICT_DETAIL].iloc[2] and "llm-judge" not in out[S.VERDICT_DETAIL].iloc[2]
