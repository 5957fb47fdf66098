"""The chunked cross-entropy equals the plain one (value and gradients), alone and through a real HF model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ded_ray.config import TrainConfig
from ded_ray.errors import UserError
from ded_ray.train.loss import (
    CHUNKED_FROM_TOKENS,
    chunked_cross_entropy,
    chunks_needed,
    resolve_loss,
    summed_token_loss,
)
from ded_ray.train.packing import Sample, build_micro_batches, filler_micro_batch
from ded_ray.train.tokenize import IGNORE_INDEX


def _plain(hidden, targets, head):
    keep = targets != IGNORE_INDEX
    return F.cross_entropy(head(hidden[keep]).float(), targets[keep], reduction="sum")


def _grads(fn, hidden, head):
    hidden = hidden.clone().requires_grad_(True)
    head.zero_grad(set_to_none=True)
    loss = fn(hidden)
    loss.backward()
    return loss.detach(), hidden.grad.clone(), head.weight.grad.clone()


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_equals_plain_value_and_gradients(chunk):
    torch.manual_seed(0)
    n, h, vocab = 50, 16, 301
    head = torch.nn.Linear(h, vocab, bias=False)
    hidden = torch.randn(n, h)
    targets = torch.randint(0, vocab, (n,))
    targets[torch.rand(n) < 0.4] = IGNORE_INDEX  # prompt positions, pad, the last token of each sample
    want = _grads(lambda x: _plain(x, targets, head), hidden, head)
    got = _grads(lambda x: chunked_cross_entropy(x, targets, head, chunk), hidden, head)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)  # fp32: only the summation order differs
    assert float(got[0]) > 0


def test_chunked_keeps_batch_shape_and_is_zero_without_targets():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 40, bias=False)
    hidden = torch.randn(2, 5, 8, requires_grad=True)  # [B, L, H], as the decoder returns it
    targets = torch.full((2, 5), IGNORE_INDEX)
    loss = chunked_cross_entropy(hidden, targets, head, 3)
    loss.backward()
    assert loss.item() == 0.0
    assert head.weight.grad is not None and not head.weight.grad.any()  # connected, zero (DDP/ZeRO want a grad)


def _tiny_model(kind: str):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    shape = dict(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256)
    if kind == "llama":  # SmolLM2's architecture: tied embeddings
        model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=True))
    else:  # DeepSeek-R1-Distill-Qwen's architecture: separate lm_head
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=False))
    model.config._attn_implementation = "sdpa"
    return model


def _samples(seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for n in (9, 23, 14, 30):
        ids = rng.integers(1, 211, n)
        labels = ids.copy()
        labels[: n // 3] = IGNORE_INDEX  # a prompt
        out.append(Sample(ids, labels))
    return out


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("packing", [True, False])
def test_chunked_loss_through_the_model_matches_plain(kind, packing):
    model = _tiny_model(kind)
    micro = build_micro_batches(_samples(), packing, 2, 64, pad_token_id=0, attention="block_mask")
    results = {}
    for loss_kind, chunk in (("plain", 0), ("chunked", 5), ("chunked", 4096)):
        model.zero_grad(set_to_none=True)
        total = sum(summed_token_loss(model, mb, "cpu", loss_kind, chunk) for mb in micro)
        total.backward()
        results[loss_kind, chunk] = (total.item(), {n: p.grad.clone() for n, p in model.named_parameters()})
    value, grads = results["plain", 0]
    for key in (("chunked", 5), ("chunked", 4096)):
        assert results[key][0] == pytest.approx(value, rel=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(results[key][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_chunked_loss_never_builds_logits_for_more_than_a_chunk():
    model = _tiny_model("qwen2")
    rows = []
    model.lm_head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].reshape(-1, 32).shape[0]))
    (mb,) = build_micro_batches(_samples(), True, 4, 128, pad_token_id=0, attention="block_mask")
    summed_token_loss(model, mb, "cpu", "chunked", 8).backward()
    assert rows[0] == 0  # the model's own lm_head call: no position (logits_to_keep = empty index)
    chunks = -(-mb.num_target_tokens // 8)
    # then target positions only, 8 at a time, in forward; backward recomputed each chunk's logits (the
    # checkpoint) instead of keeping them
    assert len(rows) == 1 + 2 * chunks and max(rows) == 8
    assert sum(rows[1 : 1 + chunks]) == sum(rows[1 + chunks :]) == mb.num_target_tokens


def test_chunked_pads_to_the_chunk_count_every_rank_agreed_on():
    """Under ZeRO-3 each lm_head call gathers its shards: a rank with fewer target tokens must still make as
    many calls as the busiest rank (the loop passes the max as num_chunks), in forward and in backward."""
    model = _tiny_model("qwen2")
    (mb,) = build_micro_batches(_samples(), True, 4, 128, pad_token_id=0, attention="block_mask")
    own = chunks_needed(mb.num_target_tokens, 8)
    values = {}
    for num_chunks in (None, own + 3):
        calls = []
        handle = model.lm_head.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        loss = summed_token_loss(model, mb, "cpu", "chunked", 8, num_chunks=num_chunks)
        loss.backward()
        handle.remove()
        values[num_chunks] = (loss.item(), len(calls))
    assert values[None][1] == 1 + 2 * own  # the model's own empty call, then each chunk forward + recompute
    assert values[own + 3][1] == 1 + 2 * (own + 3)
    assert values[own + 3][0] == pytest.approx(values[None][0], rel=1e-6)  # pads add nothing
    with pytest.raises(ValueError, match="cannot hold"):
        summed_token_loss(model, mb, "cpu", "chunked", 8, num_chunks=own - 1)


def test_chunked_filler_micro_batch_is_zero_and_reaches_every_parameter():
    model = _tiny_model("qwen2")
    loss = summed_token_loss(model, filler_micro_batch(0), "cpu", "chunked", 16)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None for p in model.parameters())


def test_auto_picks_chunked_for_long_micro_batches_and_refuses_fused_where_it_cannot_run():
    assert resolve_loss(TrainConfig(max_seq_len=128)) == "plain"  # tiny CPU runs keep the plain loss
    assert resolve_loss(TrainConfig(max_seq_len=CHUNKED_FROM_TOKENS, micro_batch_size=1)) == "chunked"
    assert resolve_loss(TrainConfig(max_seq_len=1024, micro_batch_size=4)) == "chunked"  # 4 packed rows of 1k
    zero3 = TrainConfig(use_gpu=True, strategy="deepspeed", zero_stage=3, max_seq_len=16384, micro_batch_size=1)
    assert resolve_loss(zero3) == "chunked"  # liger reads lm_head.weight: an empty shard under ZeRO-3
    assert resolve_loss(TrainConfig(loss="plain", max_seq_len=16384)) == "plain"
    with pytest.raises(UserError, match="train.loss=chunked"):
        resolve_loss(zero3.model_copy(update={"loss": "fused"}))
    with pytest.raises(UserError, match="use_gpu"):
        resolve_loss(TrainConfig(loss="fused"))


# The chunked loss under ZeRO-3 on 2 ranks trains in tests/train/test_zero3_rehearsal.py (real traces, ranks with
# different target counts); its values and gradients equal the plain loss's in the tests above.
