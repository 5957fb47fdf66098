"""The training benchmark's arithmetic (padding fraction, length scaling, synthetic length mix); no timing."""

from __future__ import annotations

import numpy as np
import pytest

from ded_ray.bench.train import padding_fraction, real_token_lengths, scaled
from ded_ray.train.synthetic import length_mix_corpus
from ded_ray.train.tokenize import tokenize_chat


def test_padding_fraction_by_hand():
    # padded micro-batches of 2: [10, 30] -> 60 slots, [20] -> 20 slots; 60 real tokens of 80 slots.
    assert padding_fraction([10, 30, 20], False, micro_batch_size=2, max_len=30) == pytest.approx(1 - 60 / 80)
    # packed into rows of at most 30 (first-fit decreasing): [30], [15 + 10]; one micro-batch of two rows padded
    # to 30 -> 55 real tokens of 60 slots.
    assert padding_fraction([10, 30, 15], True, micro_batch_size=2, max_len=30) == pytest.approx(1 - 55 / 60)


def test_scaling_keeps_the_shape_and_caps_at_the_context():
    lengths = np.array([100, 1000, 5000])
    out = scaled(lengths, max_len=500, floor=48)
    assert out.tolist() == [48, 100, 500]


def test_real_lengths_are_long_tailed(shared_data):
    lengths, source = real_token_lengths()
    assert "real traces" in source and len(lengths) == 2890
    assert np.percentile(lengths, 90) > 2.5 * np.median(lengths)


def test_length_mix_corpus_hits_the_requested_lengths():
    from transformers import AutoTokenizer

    from ded_ray.models import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model())
    wanted = [64, 150, 400]
    got = [len(tokenize_chat(tok, m, 4096).input_ids) for m in length_mix_corpus(wanted).messages]
    assert all(abs(g - w) <= 20 for g, w in zip(got, wanted)), got
