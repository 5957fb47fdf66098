"""The per-GPU memory plan: the paper's 32B recipe fits 8 x 80 GB, broken variants stop before any worker."""

from __future__ import annotations

import json

import pytest

from ded_ray.config import load_config
from ded_ray.errors import UserError
from ded_ray.train.deepspeed_config import deepspeed_config
from ded_ray.train.loss import resolve_loss
from ded_ray.train.memory import GiB, ModelShape, check_memory, estimate_loss, plan_memory

# DeepSeek-R1-Distill-Qwen-32B (Qwen2): hidden 5120, 64 layers, MLP 27648, vocab 152064, 40 heads (8 KV), untied.
H, LAYERS, INTER, VOCAB, HEADS, KV = 5120, 64, 27648, 152064, 40, 8
_KV_DIM = H // HEADS * KV
PARAMS = LAYERS * ((H * H + H) + 2 * (H * _KV_DIM + _KV_DIM) + H * H + 3 * H * INTER + 2 * H) + 2 * VOCAB * H + H
QWEN_32B = ModelShape(PARAMS, H, LAYERS, INTER, VOCAB, HEADS, tied_embeddings=False)


def _recipe(**updates):
    return load_config("ded-32b.yaml").train.model_copy(update=updates)


def _plan(config, attention="sdpa"):
    return plan_memory(QWEN_32B, config, resolve_loss(config), attention)


def test_the_32b_recipe_fits_8_gpus_of_80_gb():
    config = _recipe()
    assert config.num_workers == 8 and config.max_seq_len == 16384 and config.gpu_memory_gib <= 79.6
    est = _plan(config)
    assert est.loss == "chunked" and est.tokens == 16384
    assert est.total_bytes < config.gpu_memory_gib * GiB
    assert check_memory(est, config).startswith("train: memory plan fits")
    # the optimizer lives on the host (ZeRO-Offload), and DeepSpeed is told so
    assert est.optimizer_bytes == 0 and est.cpu_bytes == pytest.approx(12 * PARAMS / 8)
    assert deepspeed_config(config)["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_the_plain_loss_counts_full_vocabulary_fp32_logits_for_every_position():
    config = _recipe(loss="plain")
    est = _plan(config)
    fp32_logits = 16384 * VOCAB * 4  # 9.3 GiB: one fp32 copy of the whole micro-batch's logits
    assert est.loss == "plain" and est.loss_bytes >= fp32_logits
    chunked = _plan(_recipe(loss="chunked"))
    assert est.total_bytes - chunked.total_bytes >= 2 * fp32_logits  # what chunking saves at 16k x 152k
    # the chunked loss's logits are bounded by its chunk, not by the sequence length
    assert estimate_loss("chunked", 65536, H, VOCAB, chunk_tokens=1024) < estimate_loss("plain", 16384, H, VOCAB) / 8
    assert estimate_loss("fused", 16384, H, VOCAB) < estimate_loss("chunked", 16384, H, VOCAB)


def test_the_old_recipe_without_offload_does_not_fit_and_the_message_says_what_does():
    config = _recipe(offload_optimizer=False)
    with pytest.raises(UserError) as err:
        check_memory(_plan(config), config)
    message = str(err.value)
    assert "train.gpu_memory_gib is 78.0" in message and "optimizer       45.77 GiB" in message
    assert "train.offload_optimizer=true  -> 36.0 GiB, fits" in message
    assert "train.num_workers=12" in message  # or more GPUs (12 divides the batch of 48)
    assert "train.memory_check=warn" in message


@pytest.mark.parametrize("broken, fix", [
    ({"micro_batch_size": 4}, "train.micro_batch_size=1"),
    ({"num_workers": 1, "global_batch_size": 48}, "train.num_workers="),
    ({"loss": "plain", "gradient_checkpointing": False}, "train.gradient_checkpointing=true"),
    ({"loss": "plain", "gradient_checkpointing": False}, "train.loss=chunked"),
])
def test_broken_variants_fail_with_a_message_naming_the_fix(broken, fix):
    config = _recipe(**broken)
    with pytest.raises(UserError, match="cheapest fixes") as err:
        check_memory(_plan(config), config)
    assert fix in str(err.value)


def test_warn_logs_instead_and_cpu_runs_are_not_checked():
    config = _recipe(micro_batch_size=4, memory_check="warn")
    message = check_memory(_plan(config), config)
    assert "needs" in message and "starting anyway (train.memory_check=warn)" in message
    cpu = _recipe(micro_batch_size=4, use_gpu=False, offload_optimizer=False)
    assert check_memory(_plan(cpu), cpu) == "train: memory check skipped: CPU run (train.use_gpu=false)"


def test_flash_attention_drops_the_block_mask():
    assert _plan(_recipe()).attention_bytes == pytest.approx(16384**2 * 3)  # bool mask + sdpa's additive copy
    assert _plan(_recipe(), attention="flash").attention_bytes == 0


@pytest.fixture(scope="module")
def qwen_32b_folder(tmp_path_factory):
    """config.json only: the parameter count is taken on the meta device, no weights anywhere."""
    folder = tmp_path_factory.mktemp("qwen32b")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": H, "num_hidden_layers": LAYERS,
        "intermediate_size": INTER, "vocab_size": VOCAB, "num_attention_heads": HEADS, "num_key_value_heads": KV,
        "tie_word_embeddings": False, "max_position_embeddings": 32768,
    }))
    return folder


def test_train_student_stops_before_any_worker_starts(qwen_32b_folder, tmp_path, monkeypatch, capsys):
    import pandas as pd
    import ray

    from ded_ray.train import trainer

    def no_data(_corpus):
        raise AssertionError("the corpus was read: the memory check did not stop training first")

    monkeypatch.setattr(trainer, "_as_dataset", no_data)
    was_running = ray.is_initialized()
    with pytest.raises(UserError, match="train.micro_batch_size=1"):
        trainer.train_student(pd.DataFrame({"messages": []}), str(qwen_32b_folder), _recipe(micro_batch_size=4),
                              tmp_path / "run")
    assert ray.is_initialized() == was_running  # no Ray, no tokenizer actor, no training worker

    class Reached(Exception):
        pass

    def reached(_corpus):
        raise Reached

    monkeypatch.setattr(trainer, "_as_dataset", reached)
    with pytest.raises(Reached):  # warn: the plan is logged and training goes on to read the corpus
        trainer.train_student(pd.DataFrame({"messages": []}), str(qwen_32b_folder),
                              _recipe(micro_batch_size=4, memory_check="warn"), tmp_path / "run")
    assert "starting anyway (train.memory_check=warn)" in capsys.readouterr().err
