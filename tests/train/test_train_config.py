"""Training configuration pieces: memory estimate (hand arithmetic), DeepSpeed config, lr schedule, validation."""

from __future__ import annotations

import json

import pytest

from ded_ray.config import ConfigError, TrainConfig, load_config
from ded_ray.train.deepspeed_config import deepspeed_config
from ded_ray.train.memory import count_parameters, estimate_for_model, estimate_memory
from ded_ray.train.optim import lr_multiplier

PSI = 32e9  # parameters of "a 32B model"
GPUS = 8


@pytest.mark.parametrize(
    "stage, params, grads, optimizer",
    [
        # bf16 mixed-precision Adam: 2 + 2 + 12 bytes per parameter (ZeRO paper), split over 8 GPUs by stage.
        (0, 2 * PSI, 2 * PSI, 12 * PSI),  # 64 + 64 + 384 GB = 512 GB per GPU
        (1, 2 * PSI, 2 * PSI, 12 * PSI / 8),  # 64 + 64 + 48 = 176 GB
        (2, 2 * PSI, 2 * PSI / 8, 12 * PSI / 8),  # 64 + 8 + 48 = 120 GB
        (3, 2 * PSI / 8, 2 * PSI / 8, 12 * PSI / 8),  # 8 + 8 + 48 = 64 GB
    ],
)
def test_memory_estimate_32b_on_8_gpus_matches_hand_arithmetic(stage, params, grads, optimizer):
    est = estimate_memory(int(PSI), zero_stage=stage, num_gpus=GPUS, bf16=True)
    assert (est.params_bytes, est.grads_bytes, est.optimizer_bytes) == (params, grads, optimizer)
    assert est.model_states_bytes == params + grads + optimizer
    assert est.cpu_bytes == 0


def test_memory_estimate_with_offload_moves_states_to_host():
    opt = estimate_memory(int(PSI), 3, GPUS, bf16=True, offload_optimizer=True)
    assert (opt.params_bytes, opt.grads_bytes, opt.optimizer_bytes) == (8e9, 8e9, 0)
    assert opt.cpu_bytes == 48e9
    both = estimate_memory(int(PSI), 3, GPUS, bf16=True, offload_optimizer=True, offload_params=True)
    assert (both.params_bytes, both.grads_bytes, both.optimizer_bytes, both.cpu_bytes) == (0, 8e9, 0, 56e9)
    fp32 = estimate_memory(int(PSI), 3, GPUS, bf16=False)  # 4 + 4 + 8 bytes: no separate master copy
    assert (fp32.params_bytes, fp32.grads_bytes, fp32.optimizer_bytes) == (16e9, 16e9, 32e9)
    with pytest.raises(ValueError, match="ZeRO-3"):
        estimate_memory(int(PSI), 2, GPUS, offload_params=True)
    assert "offloaded to host: 44.70 GiB" in opt.table()


def test_parameter_count_of_the_32b_student_architecture(tmp_path):
    """DeepSeek-R1-Distill-Qwen-32B's shape (Qwen2), counted on the meta device without weights."""
    h, layers, inter, vocab, heads, kv = 5120, 64, 27648, 152064, 40, 8
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": h, "num_hidden_layers": layers,
        "intermediate_size": inter, "vocab_size": vocab, "num_attention_heads": heads, "num_key_value_heads": kv,
        "tie_word_embeddings": False, "max_position_embeddings": 32768,
    }))
    kv_dim = h // heads * kv
    per_layer = (h * h + h) + 2 * (h * kv_dim + kv_dim) + h * h + 3 * h * inter + 2 * h  # q(+b) k,v(+b) o mlp norms
    expected = layers * per_layer + 2 * vocab * h + h  # + embeddings, lm_head, final norm
    count, _ = count_parameters(str(tmp_path))
    assert count == expected
    assert 32.7e9 < count < 32.8e9
    cfg = load_config("ded-32b.yaml").train
    est = estimate_for_model(str(tmp_path), cfg)
    assert est.zero_stage == 3 and est.num_gpus == 8
    assert est.params_bytes == 2 * count / 8
    assert est.optimizer_bytes == 0 and est.cpu_bytes == 12 * count / 8  # ded-32b offloads the optimizer
    assert est.activation_bytes and est.activation_bytes > 0


def test_deepspeed_config_follows_the_train_config():
    cfg = TrainConfig(strategy="deepspeed", zero_stage=3, bf16=True, use_gpu=True, offload_optimizer=True, num_workers=8,
                      global_batch_size=48)
    ds = deepspeed_config(cfg)
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == "cpu" and "offload_param" not in zero
    assert ds["bf16"]["enabled"] is True and ds["gradient_clipping"] == cfg.max_grad_norm
    cpu = deepspeed_config(TrainConfig(strategy="deepspeed", zero_stage=2))
    assert cpu["zero_optimization"]["stage"] == 2 and cpu["zero_force_ds_cpu_optimizer"] is False
    with pytest.raises(ValueError, match="deepspeed"):
        deepspeed_config(TrainConfig(strategy="ddp"))


def test_lr_schedule_warms_up_then_decays():
    f = lr_multiplier("cosine", warmup_steps=2, total_steps=10)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert lr_multiplier("linear", 0, 4)(2) == pytest.approx(0.5)
    assert lr_multiplier("constant", 1, 4)(3) == 1.0


def test_train_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="multiple of num_workers"):
        TrainConfig(num_workers=3, global_batch_size=8)
    with pytest.raises(ValueError, match="pack_tokens"):
        TrainConfig(max_seq_len=512, pack_tokens=256)
    with pytest.raises(ValueError, match="use_gpu"):
        TrainConfig(strategy="deepspeed", zero_stage=3, offload_optimizer=True)
    assert TrainConfig(micro_batch_size=2, max_seq_len=100).packed_tokens == 100
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("demo.yaml", ["train.zero=3"])


def test_workers_use_the_cpu_accelerator_and_the_project_cache_for_compiled_ops(tmp_path, monkeypatch):
    from ded_ray.train.trainer import worker_env

    monkeypatch.setenv("DED_CACHE_DIR", str(tmp_path))
    env = worker_env(TrainConfig(strategy="deepspeed", zero_stage=3))
    assert env["DS_ACCELERATOR"] == "cpu"
    assert env["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "torch_extensions")
    assert "DS_ACCELERATOR" not in worker_env(TrainConfig(use_gpu=True))
