"""The driver's training progress line (the Ray side is exercised by test_train_trainer.py)."""

from __future__ import annotations

from ded_ray.train.progress import step_line

METRICS = {"step": 12, "epoch": 0, "loss": 0.51234, "tokens_per_s": 811.6, "step_time_s": 10.0}


def test_step_line_shows_step_epoch_loss_speed_and_time_left():
    # 36 more steps at this step's 10 s
    assert step_line(METRICS, total_steps=48, epochs=2) == (
        "train: step 12/48 (epoch 1/2) loss 0.5123, 812 tokens/s, about 6 min left")
    assert step_line(METRICS, total_steps=14, epochs=2).endswith("812 tokens/s, about 20 s left")


def test_last_step_has_no_time_left():
    assert step_line({**METRICS, "step": 48, "epoch": 1}, 48, 2) == (
        "train: step 48/48 (epoch 2/2) loss 0.5123, 812 tokens/s")
