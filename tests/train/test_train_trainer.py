"""Student SFT end to end on a local Ray (2 CPUs): Ray Train + DDP / DeepSpeed ZeRO-3 on the tiny model.

Each test is a real TorchTrainer run of a few optimizer steps on a small generated arithmetic corpus written
in CORPUS_SCHEMA. Slow (worker start-up, DeepSpeed import): marked `engine`.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import TrainConfig
from ded_ray.stages.to_sft import write_corpus
from ded_ray.train import progress
from ded_ray.train.synthetic import arithmetic_corpus
from ded_ray.train.trainer import train_student

pytestmark = pytest.mark.engine

STEP_METRICS = {"loss", "lr", "tokens_per_s", "padding_fraction", "grad_norm", "samples", "tokens", "step"}


@pytest.fixture(scope="module")
def tiny_path():
    from ded_ray.models import build_tiny_model

    return str(build_tiny_model())


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    """24 usable arithmetic samples + one too long + one without an assistant turn."""
    df = arithmetic_corpus(24, seed=1)
    bad = arithmetic_corpus(2, seed=2)
    bad.at[0, S.MESSAGES] = [{"role": "user", "content": "What is 1 + 1?"},
                             {"role": "assistant", "content": "1 + 1 = 2. " * 60}]
    bad.at[1, S.MESSAGES] = [{"role": "user", "content": "What is 1 + 1?"}]
    path = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    write_corpus(pd.concat([df, bad], ignore_index=True), path)
    return str(path)


def _config(**kw) -> TrainConfig:
    base = dict(max_seq_len=128, learning_rate=3e-3, warmup_ratio=0.0, global_batch_size=8, micro_batch_size=2,
                epochs=2, shuffle=False, max_failures=0)
    return TrainConfig(**{**base, **kw})


def _generates(student_dir: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student_dir)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:])


def _check_run(result, steps: int, tmp_path):
    assert [h["step"] for h in result.history] == list(range(1, steps + 1))
    assert STEP_METRICS <= set(result.history[0])
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.5  # the fixed corpus is being learned
    assert result.rejected == {"too_long": 1, "no_assistant_turn": 1}
    assert (tmp_path / "run" / "rejected" / "train_tokenize" / "too_long").is_dir()
    assert result.num_samples == 24
    assert isinstance(_generates(result.student_dir), str)
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()
    assert (tmp_path / "run" / "student" / "chat_template.jinja").exists()


def test_ddp_two_workers_train_and_save_a_loadable_student(ray_local, tiny_path, corpus_path, tmp_path,
                                                            monkeypatch, capsys):
    """One DDP run covers the worker count, packing, progress and the saved student (padded batches are
    compared with packed ones under ZeRO-3 below; one worker trains in every pipeline e2e)."""
    monkeypatch.setattr(progress, "POLL_S", 0.2)
    result = train_student(corpus_path, tiny_path, _config(strategy="ddp", num_workers=2), tmp_path / "run")
    _check_run(result, steps=6, tmp_path=tmp_path)  # 24 samples / 8 per step x 2 epochs
    assert all(h["samples"] == 8 for h in result.history)  # 4 per worker, both workers counted
    # the driver showed progress while the workers trained (rank 0 posts each step to a ProgressBoard)
    assert re.search(r"train: step [1-6]/6 \(epoch [12]/2\) loss \d+\.\d{4}, \d+ tokens/s", capsys.readouterr().err)
    # packed (the default): several samples per row, padding only at the end of a micro-batch's shorter rows
    assert all(h["padding_fraction"] < 0.1 for h in result.history)


# ZeRO-3 on two workers with a killed worker and a resume: tests/train/test_zero3_rehearsal.py (real traces).


def test_packed_and_padded_training_match_under_zero3(ray_local, tiny_path, corpus_path, tmp_path):
    runs = {}
    for packing in (True, False):
        config = _config(strategy="deepspeed", zero_stage=3, num_workers=1, packing=packing, max_steps=3)
        runs[packing] = train_student(corpus_path, tiny_path, config, tmp_path / f"run-{packing}").history
    packed, padded = ([h["loss"] for h in runs[p]] for p in (True, False))
    assert len(packed) == 3
    assert packed == pytest.approx(padded, rel=1e-4)  # same samples per step, same token-summed loss
    assert runs[True][0]["padding_fraction"] < runs[False][0]["padding_fraction"]
    assert runs[True][0]["micro_batches"] < runs[False][0]["micro_batches"]  # fuller rows, fewer passes
