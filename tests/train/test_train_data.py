"""SFT data path: chat tokenisation with assistant-only labels, length rejection, packing, the summed loss.

Uses the tiny random-init model with the real SmolLM2 tokenizer and chat template (no Ray Train).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ded_ray import schema as S
from ded_ray.train.loss import summed_token_loss
from ded_ray.train.packing import (
    Sample,
    block_causal_mask,
    build_micro_batches,
    collate_packed,
    collate_padded,
    filler_micro_batch,
    plan_micro_batches,
)
from ded_ray.train.tokenize import IGNORE_INDEX, TokenizeStage, tokenize_chat

ANSWER = "3 + 4 = 7. The answer is \\boxed{7}."
CHAT = [{"role": "user", "content": "What is 3 + 4?"}, {"role": "assistant", "content": ANSWER}]


@pytest.fixture(scope="module")
def tiny_path():
    from ded_ray.models import build_tiny_model

    return str(build_tiny_model())


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


@pytest.fixture(scope="module")
def model(tiny_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="sdpa").eval()


def _labelled_text(tokenizer, tok) -> str:
    return tokenizer.decode([t for t, l in zip(tok.input_ids, tok.labels) if l != IGNORE_INDEX])


# --- tokenisation and the label mask ----------------------------------------------------------------------


def test_labels_cover_exactly_the_assistant_turn(tokenizer):
    tok = tokenize_chat(tokenizer, CHAT, max_seq_len=512)
    assert tok.reject_reason is None
    labels = np.array(tok.labels)
    ids = np.array(tok.input_ids)
    learned = labels != IGNORE_INDEX
    # Labelled positions carry their own token id; the rest is -100.
    assert (labels[learned] == ids[learned]).all()
    assert set(labels[~learned].tolist()) == {IGNORE_INDEX}
    # The learned span is one contiguous block: the answer and the end-of-turn token, nothing of the prompt.
    first, last = np.flatnonzero(learned)[[0, -1]]
    assert learned[first : last + 1].all()
    assert _labelled_text(tokenizer, tok) == ANSWER + tokenizer.eos_token
    prompt = tokenizer.decode(ids[:first].tolist())
    assert prompt.endswith("<|im_start|>assistant\n") and "What is 3 + 4?" in prompt
    # The template's trailing newline after <|im_end|> is input, not a target.
    assert tokenizer.decode(ids[last + 1 :].tolist()) == "\n"


def test_system_prompt_and_earlier_assistant_turns_are_masked(tokenizer):
    chat = [
        {"role": "system", "content": "You reason step by step."},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5. The answer is \\boxed{5}."},  # few-shot example: context
        *CHAT,
    ]
    tok = tokenize_chat(tokenizer, chat, max_seq_len=512)
    assert _labelled_text(tokenizer, tok) == ANSWER + tokenizer.eos_token
    text = tokenizer.decode(tok.input_ids)
    assert "You reason step by step." in text and "\\boxed{5}" in text  # present as input


def test_too_long_is_rejected_with_a_reason_not_truncated(tokenizer):
    full = len(tokenize_chat(tokenizer, CHAT, max_seq_len=512).input_ids)
    tok = tokenize_chat(tokenizer, CHAT, max_seq_len=full - 1)
    assert tok.reject_reason == "too_long"
    assert str(full) in tok.reject_detail and tok.input_ids == []
    assert tokenize_chat(tokenizer, CHAT, max_seq_len=full).reject_reason is None


def test_truncate_cuts_the_completion_only_when_asked(tokenizer):
    full = tokenize_chat(tokenizer, CHAT, max_seq_len=512)
    cut = tokenize_chat(tokenizer, CHAT, max_seq_len=len(full.input_ids) - 5, truncate=True)
    assert cut.reject_reason is None
    assert len(cut.input_ids) == len(full.input_ids) - 5
    assert cut.input_ids == full.input_ids[: len(cut.input_ids)]
    assert cut.num_label_tokens == full.num_label_tokens - 4  # the 5 cut tokens held 4 targets + the "\n"
    prompt_len = full.labels.index(next(l for l in full.labels if l != IGNORE_INDEX))
    assert tokenize_chat(tokenizer, CHAT, max_seq_len=prompt_len, truncate=True).reject_reason == "prompt_too_long"


def test_chats_without_a_final_assistant_turn_are_rejected(tokenizer):
    assert tokenize_chat(tokenizer, CHAT[:1], max_seq_len=512).reject_reason == "no_assistant_turn"
    assert tokenize_chat(tokenizer, [], max_seq_len=512).reject_reason == "no_assistant_turn"


def test_tokenize_stage_marks_rejects_and_keeps_every_row(tiny_path):
    batch = pd.DataFrame({S.MESSAGES: [CHAT, CHAT[:1], [CHAT[0], {"role": "assistant", "content": "x " * 400}]]})
    out = TokenizeStage(tiny_path, max_seq_len=128)(batch)
    assert len(out) == 3
    assert out[S.REJECT_REASON].tolist() == [None, "no_assistant_turn", "too_long"]
    assert out["num_label_tokens"].iloc[0] > 0 and len(out["input_ids"].iloc[1]) == 0


def test_tokenize_stage_through_ray_data(ray_local, tiny_path):
    rows = pd.DataFrame({S.MESSAGES: [CHAT] * 5 + [CHAT[:1]]})
    out = (
        ray_local.data.from_pandas(rows)
        .map_batches(TokenizeStage, fn_constructor_kwargs={"model_path": tiny_path, "max_seq_len": 128},
                     batch_format="pandas", batch_size=4, compute=ray_local.data.ActorPoolStrategy(size=1))
        .to_pandas()
    )
    assert out[S.REJECT_REASON].isna().sum() == 5
    labels = np.asarray(out.loc[out[S.REJECT_REASON].isna(), "labels"].iloc[0])
    assert (labels != IGNORE_INDEX).sum() == out["num_label_tokens"].iloc[0]


# --- packing ----------------------------------------------------------------------------------------------


def _samples(tokenizer, n=4) -> list[Sample]:
    out = []
    for a in range(n):
        chat = [{"role": "user", "content": f"What is {a} + {a + 2}?"},
                {"role": "assistant", "content": f"{a} + {a + 2} = {2 * a + 2}. " * (1 + a) + "Done."}]
        tok = tokenize_chat(tokenizer, chat, max_seq_len=512)
        out.append(Sample(np.array(tok.input_ids), np.array(tok.labels)))
    return out


def test_packed_positions_restart_and_targets_never_cross_samples(tokenizer):
    samples = _samples(tokenizer)
    lens = [len(s) for s in samples]
    starts = np.cumsum([0] + lens[:-1])
    ends = starts + np.array(lens) - 1
    for attention in ("varlen", "block_mask"):
        packed = collate_packed([samples], attention)
        pos = packed.position_ids[0].numpy()
        assert (pos[starts] == 0).all() and (np.diff(pos)[np.setdiff1d(np.arange(len(pos) - 1), ends)] == 1).all()
        assert packed.num_padding == 0 and packed.input_ids.shape == (1, sum(lens))
        # The last token of each sample has no target (it must not predict the next sample's first token).
        assert (packed.targets[0].numpy()[ends] == IGNORE_INDEX).all()
    assert collate_packed([samples], "varlen").attention_mask is None  # the varlen kernel needs no mask


def test_block_mask_is_causal_within_samples_only():
    mask = block_causal_mask(torch.tensor([[0, 0, 1, 1, 1]]))[0, 0]
    assert mask.int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]
    additive = block_causal_mask(torch.tensor([[0, 0, 1, 1, 1]]), torch.float32)[0, 0]
    assert ((additive == 0) == mask).all() and additive.min() == torch.finfo(torch.float32).min


def test_packed_rows_pad_only_row_ends_and_pads_attend_to_themselves(tokenizer):
    a, b, c = _samples(tokenizer, n=3)
    mb = collate_packed([[a, b], [c]], "block_mask", pad_token_id=tokenizer.pad_token_id)
    width = len(a) + len(b)
    assert mb.input_ids.shape == (2, width) and mb.num_padding == width - len(c)
    assert (mb.targets[1, len(c):] == IGNORE_INDEX).all()
    pads = mb.attention_mask[1, 0, len(c):, :]
    assert (pads.sum(-1) == 1).all()  # each pad sees exactly one position: itself


@pytest.mark.parametrize("impl, mask_dtype", [("sdpa", torch.bool), ("eager", torch.float32)])
def test_packed_logits_equal_each_sample_run_alone(tiny_path, tokenizer, impl, mask_dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation=impl).eval()
    samples = _samples(tokenizer)
    rows = [[samples[0], samples[3]], [samples[1], samples[2]]]
    cases = [
        (rows, collate_packed(rows, "block_mask", mask_dtype, tokenizer.pad_token_id)),
        # varlen concatenates every row into one; on CPU transformers reads the packing from the position ids
        ([[s for row in rows for s in row]], collate_packed(rows, "varlen")),
    ]
    with torch.no_grad():
        for layout, packed_mb in cases:
            # use_cache=False as in training: with a KV cache transformers ignores position-id packing.
            logits = model(**packed_mb.model_inputs("cpu"), use_cache=False).logits
            for r, row in enumerate(layout):
                at = 0
                for s in row:
                    alone = model(input_ids=torch.from_numpy(s.input_ids)[None].long()).logits[0]
                    torch.testing.assert_close(logits[r, at : at + len(s)], alone, rtol=1e-4, atol=1e-4)
                    at += len(s)
        # Without the mask and position reset the later samples see the earlier ones: the check above can fail.
        one_row = collate_packed([samples], "block_mask", mask_dtype)
        isolated = model(**one_row.model_inputs("cpu")).logits[0]
        contaminated = model(input_ids=one_row.input_ids).logits[0]
    assert not torch.allclose(isolated, contaminated, atol=1e-4)


def _grads(model, micro_batches) -> tuple[float, torch.Tensor]:
    model.zero_grad()
    total_targets = sum(m.num_target_tokens for m in micro_batches)
    loss_sum = 0.0
    for mb in micro_batches:
        loss = summed_token_loss(model, mb, "cpu")
        (loss / total_targets).backward()
        loss_sum += loss.item()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss_sum / total_targets, grad


def test_packed_and_padded_give_the_same_loss_and_gradient(model, tokenizer):
    samples = _samples(tokenizer, n=5)
    pad_id = tokenizer.pad_token_id
    padded = build_micro_batches(samples, packing=False, micro_batch_size=2, pack_tokens=512, pad_token_id=pad_id)
    assert len(padded) == 3 and sum(m.num_padding for m in padded) > 0
    loss_pad, grad_pad = _grads(model, padded)
    for attention in ("block_mask", "varlen"):
        packed = build_micro_batches(samples, packing=True, micro_batch_size=2, pack_tokens=120, pad_token_id=pad_id,
                                     attention=attention)
        assert sum(m.num_samples for m in packed) == 5 and len(packed) >= 2
        if attention == "varlen":
            assert sum(m.num_padding for m in packed) == 0
        loss_pack, grad_pack = _grads(model, packed)
        assert loss_pad == pytest.approx(loss_pack, rel=1e-5)
        torch.testing.assert_close(grad_pad, grad_pack, rtol=1e-4, atol=1e-6)
    model.zero_grad()


def test_masked_tokens_contribute_no_loss(model, tokenizer):
    (sample,) = _samples(tokenizer, n=1)
    mb = collate_padded([sample], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=mb.input_ids).logits[0]
        loss = summed_token_loss(model, mb, "cpu").item()
    logp = torch.log_softmax(logits, -1)
    ids = torch.from_numpy(sample.input_ids)
    learned = torch.from_numpy(sample.labels) != IGNORE_INDEX
    # By hand: -log p(token t | tokens < t) summed over the labelled positions t only.
    by_hand = -sum(logp[t - 1, ids[t]].item() for t in torch.nonzero(learned).flatten().tolist())
    assert loss == pytest.approx(by_hand, rel=1e-5)
    everything = -sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)))
    assert everything > by_hand * 1.5  # the prompt would dominate the loss if it were not masked
    assert mb.num_target_tokens == int(learned.sum())


def test_plan_rows_respect_capacity_and_keep_every_sample():
    lengths = [90, 10, 60, 40, 30, 70, 5]
    plan = plan_micro_batches(lengths, packing=True, micro_batch_size=2, pack_tokens=100)
    rows = [row for mb in plan for row in mb]
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows)
    assert len(rows) == 4  # 305 tokens: the fewest rows of 100 possible
    assert [len(mb) for mb in plan] == [2, 2]
    padded = plan_micro_batches(lengths, packing=False, micro_batch_size=3, pack_tokens=100)
    assert padded == [[[0], [1], [2]], [[3], [4], [5]], [[6]]]


def test_filler_pass_adds_no_loss_and_no_gradient(model, tokenizer):
    model.zero_grad()
    loss = summed_token_loss(model, filler_micro_batch(tokenizer.pad_token_id), "cpu")
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
