"""Model resolution offline: local folders, the built-in SmolLM2, cached HF ids, and clear errors."""

from __future__ import annotations

import pytest

from ded_ray.models import ModelNotFoundError, build_tiny_model, resolve_model


def test_unknown_name_says_what_is_accepted():
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        resolve_model("no-such-model")


def test_uncached_hf_id_gives_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download Qwen/QwQ-32B"):
        resolve_model("Qwen/QwQ-32B")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(tmp_path)


def test_builtin_smollm2_is_a_loadable_folder_with_chat_template():
    from transformers import AutoConfig, AutoTokenizer

    folder = resolve_model("smollm2-135m")
    assert (folder / "model.safetensors").exists()
    assert resolve_model("smollm2-135m") == folder  # cached, same folder
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "<|im_start|>assistant" in text


@pytest.mark.engine
def test_builtin_smollm2_answers_a_worked_example():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    chat = [{"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "2 + 3 = 5. The answer is \\boxed{5}."},
            {"role": "user", "content": "What is 4 * 3?"}]
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "\\boxed{12}" in answer  # the dequantised weights are the real model, not noise


def test_tiny_model_has_the_real_tokenizer_and_runs(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tokenizer)
    ids = tokenizer("What is 1 + 1?", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert torch.isfinite(model(ids).logits).all()
