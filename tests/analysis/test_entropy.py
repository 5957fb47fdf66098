"""Token entropy under teacher forcing agrees with a direct softmax → -Σ p log2 p on a tiny model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ded_ray import schema as S
from ded_ray.analysis import entropy as E


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random model made confident: its (tied) embeddings scaled up, so next-token distributions range
    from peaked to flat. A freshly initialised one is near-uniform (every entropy ≈ log2(vocab)), which would
    let an off-by-one position go unnoticed."""
    from ded_ray.models import build_tiny_model

    model, tokenizer = E.load_causal_lm(build_tiny_model(seed=3))
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    path = tmp_path_factory.mktemp("sharp-tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def _pairs(tokenizer):
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                         add_generation_prompt=True)
    prompts = [chat, "Question: name a prime.\nAnswer:", chat + "<think>\n", "x", "A much longer prompt. " * 12]
    responses = ["2 + 3 = 5, so the answer is \\boxed{5}.", " 7", "Let me add them: 5.</think> \\boxed{5}",
                 "yz " * 30, "ok"]
    return prompts, responses


def _direct(model, tokenizer, prompt: str, response: str) -> np.ndarray:
    """One sequence, no padding, full logits: the entropy of softmax at the positions predicting response tokens."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    probs = torch.softmax(logits, dim=-1)
    terms = torch.where(probs > 0, probs * torch.log2(probs), torch.zeros_like(probs))
    h = -terms.sum(dim=-1).numpy()
    return h[len(p) - 1: len(p) + len(r) - 1]


def test_matches_direct_softmax_entropy_and_counts_response_tokens_only(tiny):
    _, model, tokenizer = tiny
    prompts, responses = _pairs(tokenizer)
    got = E.response_token_entropies(model, tokenizer, prompts, responses, batch_size=2)
    for prompt, response, values in zip(prompts, responses, got):
        want = _direct(model, tokenizer, prompt, response)
        assert len(values) == len(tokenizer(response, add_special_tokens=False)["input_ids"])
        np.testing.assert_allclose(values, want, rtol=1e-4, atol=1e-4)
    flat = np.concatenate(got)
    assert flat.max() <= np.log2(len(tokenizer)) + 1e-6 and flat.min() >= 0
    assert flat.std() > 0.5  # the fixture's distributions differ enough that a shifted position would show


def test_padding_in_batches_does_not_change_results(tiny):
    _, model, tokenizer = tiny
    prompts, responses = _pairs(tokenizer)
    one = E.response_token_entropies(model, tokenizer, prompts, responses, batch_size=1)
    four = E.response_token_entropies(model, tokenizer, prompts, responses, batch_size=4)
    for a, b in zip(one, four):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_prompt_is_context_not_counted(tiny):
    _, model, tokenizer = tiny
    response = "the answer is 5"
    short, long = E.response_token_entropies(model, tokenizer, ["Q:", "Q: a longer question here, please answer:"],
                                             [response, response])
    assert len(short) == len(long)  # the prompt's length does not change how many tokens are scored
    assert not np.allclose(short, long)  # but it conditions the distributions
    # With no prompt the first response token has no predictive distribution, so it is not scored.
    (empty,) = E.response_token_entropies(model, tokenizer, [""], [response])
    assert len(empty) == len(short) - 1
    np.testing.assert_allclose(empty, _direct_no_prompt(model, tokenizer, response), rtol=1e-4, atol=1e-4)


def _direct_no_prompt(model, tokenizer, response):
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([r])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return (-(logp.exp() * logp).sum(-1) / np.log(2)).numpy()[:-1]


def test_max_tokens_scores_a_prefix(tiny):
    _, model, tokenizer = tiny
    prompts, responses = _pairs(tokenizer)
    full = E.response_token_entropies(model, tokenizer, prompts, responses)
    capped = E.response_token_entropies(model, tokenizer, prompts, responses, max_tokens=3)
    for a, b in zip(full, capped):
        assert len(b) == min(3, len(a))
        np.testing.assert_allclose(b, a[:3], rtol=1e-5, atol=1e-5)


def test_full_forward_fallback_agrees_with_chunked_head(tiny):
    _, model, tokenizer = tiny
    prompts, responses = _pairs(tokenizer)
    head = E._LogitsHead(model)
    head.check(tokenizer)
    assert not head.full_forward  # Llama: the body + lm_head path is taken and passes its own check
    chunked = E.response_token_entropies(model, tokenizer, prompts, responses)
    original = E._logits_head
    try:
        def forced(model, tokenizer):
            h = E._LogitsHead(model)
            h.full_forward = True
            return h
        E._logits_head = forced
        full = E.response_token_entropies(model, tokenizer, prompts, responses)
    finally:
        E._logits_head = original
    for a, b in zip(chunked, full):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_from_model_path_and_bad_inputs(tiny):
    path, model, tokenizer = tiny
    got = E.token_entropy_under_teacher_forcing(str(path), ["Q:"], ["five"], batch_size=1)
    np.testing.assert_allclose(got[0], _direct(model, tokenizer, "Q:", "five"), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        E.response_token_entropies(model, tokenizer, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="context"):
        E.response_token_entropies(model, tokenizer, ["word " * 3000], ["c"])


def test_entropy_summary_statistics():
    s = E.entropy_summary([np.array([0.0, 1.0]), np.array([2.0, 3.0, 4.0]), np.array([])])
    assert s == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0)), "median": 2.0, "q1": 1.0, "q3": 3.0, "n_tokens": 5}
    assert E.entropy_summary([]) == {"mean": None, "std": None, "median": None, "q1": None, "q3": None, "n_tokens": 0}
    assert E.entropy_summary(np.array([0.5]))["median"] == 0.5


def test_histogram_is_a_png():
    png = E.entropy_histogram_png([np.array([0.0, 0.1, 2.5]), np.array([7.9])])
    assert png.startswith(b"\x89PNG")
    overlaid = E.entropy_histogram_png(None, groups={"R1": np.array([0.7, 1.2]), "QwQ": [np.array([0.4])]})
    assert overlaid.startswith(b"\x89PNG") and overlaid != png
    assert E.entropy_histogram_png([]).startswith(b"\x89PNG")  # "no data" still renders


def test_teacher_entropy_summary_from_rollouts():
    rows = pd.DataFrame({S.TOKEN_ENTROPY: [1.0, None, 3.0], S.NUM_TOKENS: [10, 5, 30]})
    s = E.teacher_entropy_summary(rows)
    assert s["mean_of_rows"] == 2.0 and s["median"] == 2.0
    assert s["token_weighted_mean"] == pytest.approx((1.0 * 10 + 3.0 * 30) / 40)
    assert (s["n_rows"], s["n_rows_with_entropy"]) == (3, 2)
    assert E.teacher_entropy_summary(pd.DataFrame({S.RESPONSE: ["x"]})) is None
    assert E.teacher_entropy_summary(pd.DataFrame({S.TOKEN_ENTROPY: [None, None]})) is None
    no_lengths = E.teacher_entropy_summary(pd.DataFrame({S.TOKEN_ENTROPY: [0.5]}))
    assert no_lengths["token_weighted_mean"] is None and no_lengths["q1"] == 0.5
