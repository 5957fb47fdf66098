"""Token entropy of a teacher's corpus as the student sees it (PAPER.md §4.1, Figure 3).

The paper reports per-token entropy in bits of "the probability distribution of tokens generated" for two
teachers' corpora, but does not say whose distribution (PAPER.md §5, item 12). Our choice, stated once:

- the distribution is the **base student's** (the model before it is trained on that corpus), scoring the
  teacher's response under **teacher forcing**: at each response token the student's next-token distribution
  given the prompt and the response so far. The paper's point is the student's "affinity" for a corpus, which
  is a property of the corpus as the student meets it; the tuned student has already fitted these responses;
- the **full softmax** over the whole vocabulary, **temperature 1**, no top-k/top-p truncation (so values go up
  to log2(vocab size), like the paper's 8-bit tails);
- **response tokens only**: one value per response token (the distribution that predicts that token); prompt
  tokens are context, never counted. With an empty prompt the first response token has no context and is not
  scored;
- **bits** (log base 2);
- prompt and response are tokenised separately without added special tokens and concatenated, exactly as
  SFT tokenises them (`train/tokenize.py`): `prompt` is the chat already rendered with the template (the
  rollout's `prompt` column), so the response tokens are the ones the student is trained on.

The teacher-side entropy is different: engines fill the rollout column `token_entropy` with the mean
per-token entropy of the *teacher's* sampling distribution (full or top-k, see engines/base.py), one number per
row; `teacher_entropy_summary` summarises that column.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from ded_ray import schema as S

LN2 = math.log(2.0)
# Positions per lm-head call: bounds the float32 logits block to chunk × vocab (512 × 49k ≈ 100 MB).
_HEAD_CHUNK = 512


def load_causal_lm(name_or_path: str | os.PathLike, device: str | None = None, dtype: str = "float32"):
    """(model in eval mode, tokenizer) for a local folder, built-in name or cached HF id (`models.resolve_model`).

    float32 by default: entropies and pooled states are compared across models, so no bf16 rounding on CPU.
    dtype "auto": bf16 on GPUs (a 32B model is ~65 GB in bf16, twice that in fp32), fp32 on CPU. With several
    GPUs visible the layers are spread over them (`device_map="auto"`): one 80 GB GPU does not hold a 32B model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ded_ray.models import resolve_model

    path = resolve_model(name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    tokenizer = AutoTokenizer.from_pretrained(path)
    if device == "cuda" and torch.cuda.device_count() > 1:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), device_map="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    return model.eval(), tokenizer


def token_entropy_under_teacher_forcing(
    model_path: str | os.PathLike, prompts: list[str], responses: list[str], batch_size: int = 8,
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """Per-token entropies (bits) of the model's next-token distribution at each response token.

    One float64 array per (prompt, response) pair, of length = number of response tokens (capped by
    `max_tokens`, and by the model's context length minus the prompt). See the module docstring for the choices.
    """
    model, tokenizer = load_causal_lm(model_path)
    return response_token_entropies(model, tokenizer, prompts, responses, batch_size, max_tokens)


def response_token_entropies(
    model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 8,
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """`token_entropy_under_teacher_forcing` on an already loaded model (so callers can reuse it)."""
    import torch

    if len(prompts) != len(responses):
        raise ValueError(f"token entropy: {len(prompts)} prompts but {len(responses)} responses; "
                         "pass one prompt per response")
    if batch_size < 1:
        raise ValueError(f"token entropy: batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"token entropy: max_tokens must be >= 1 or None, got {max_tokens}")
    context = getattr(model.config, "max_position_embeddings", None)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []
    rows = []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        if context is not None and len(p) >= context:
            raise ValueError(f"token entropy: prompt {i} has {len(p)} tokens, the model's context is {context}: "
                             "shorten the prompt or use a model with a longer context")
        keep = len(r) if max_tokens is None else min(len(r), max_tokens)
        if context is not None:
            keep = min(keep, context - len(p))
        rows.append((list(p), list(r[:keep])))

    head = _logits_head(model, tokenizer)
    results: list[np.ndarray] = [np.zeros(0)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))  # little padding per batch
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            seqs = [rows[i][0] + rows[i][1] for i in batch]
            width = max(len(s) for s in seqs)
            if width == 0:
                continue
            # Right padding: real tokens keep positions 0..n-1 and the causal mask keeps them blind to the
            # pads after them, so a row's entropies do not depend on what it is batched with.
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, :len(s)] = torch.tensor(s, dtype=torch.long)
                mask[j, :len(s)] = 1
            hidden = head.hidden(ids.to(device), mask.to(device))
            for j, i in enumerate(batch):
                n_prompt, n_resp = len(rows[i][0]), len(rows[i][1])
                # The distribution over response token t sits at position t-1; with no prompt, token 0 has none.
                first = max(n_prompt - 1, 0)
                last = n_prompt + n_resp - 1  # exclusive: the state after the last token predicts nothing scored
                results[i] = _entropy_bits(head, hidden[j, first:last])
    return results


def _entropy_bits(head: "_LogitsHead", states) -> np.ndarray:
    import torch

    out = []
    for start in range(0, states.shape[0], _HEAD_CHUNK):
        logits = head.logits(states[start:start + _HEAD_CHUNK]).float()
        # H = logsumexp(z) - Σ softmax(z)·z: stable, no 0·log 0 to special-case.
        nats = torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)
        out.append(nats.clamp_min(0).double().cpu().numpy() / LN2)
    return np.concatenate(out) if out else np.zeros(0)


class _LogitsHead:
    """The transformer body's last hidden states, then the LM head on just the positions we score.

    A full forward would materialise batch × length × vocab float logits (GBs for long responses); the body
    plus the head in chunks does not. Architectures that transform logits beyond a linear head are covered by
    Gemma-style `final_logit_softcapping`; any other difference is caught by `check`, which compares against a
    plain forward once, and we then fall back to full forwards.
    """

    def __init__(self, model):
        self.model = model
        self.body = model.base_model
        self.lm_head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.full_forward = self.lm_head is None or self.body is model

    def hidden(self, ids, mask):
        if self.full_forward:  # "hidden" are then the logits themselves; `logits` passes them through
            return self.model(input_ids=ids, attention_mask=mask).logits
        return self.body(input_ids=ids, attention_mask=mask).last_hidden_state

    def logits(self, states):
        if self.full_forward:
            return states
        import torch

        z = self.lm_head(states)
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    def check(self, tokenizer) -> None:
        import torch

        if self.full_forward:
            return
        ids = tokenizer("The head check: 1 + 2 = 3.", add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(next(self.model.parameters()).device)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            want = self.model(input_ids=ids, attention_mask=mask).logits[0].float()
            got = self.logits(self.hidden(ids, mask)[0]).float()
        if not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max())):
            self.full_forward = True


def _logits_head(model, tokenizer) -> _LogitsHead:
    head = _LogitsHead(model)
    head.check(tokenizer)
    return head


def entropy_summary(values: np.ndarray | Sequence[float] | Sequence[np.ndarray]) -> dict[str, Any]:
    """Mean, std, median, quartiles (q1, q3) and count of per-token entropies, like PAPER.md's Figure 3 table.

    `values` is a flat array or a list of per-response arrays (as `token_entropy_under_teacher_forcing`
    returns). Statistics are None when there is no token (never 0: "no data" is not "no entropy").
    """
    flat = _flatten(values)
    if flat.size == 0:
        return {"mean": None, "std": None, "median": None, "q1": None, "q3": None, "n_tokens": 0}
    q1, median, q3 = np.percentile(flat, [25, 50, 75])
    return {"mean": float(flat.mean()), "std": float(flat.std()), "median": float(median), "q1": float(q1),
            "q3": float(q3), "n_tokens": int(flat.size)}


def _flatten(values) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(float).ravel()
    parts = [np.asarray(v, dtype=float).ravel() for v in values]
    return np.concatenate(parts) if parts else np.zeros(0)


def entropy_histogram_png(values, title: str = "Per-token entropy of the teacher's responses (student, teacher-forced)",
                          groups: dict[str, Any] | None = None) -> bytes:
    """Histogram PNG (bytes) of per-token entropies in bits; `groups` (label → values) overlays corpora."""
    from ded_ray.analysis.diagnostic_plots import entropy_histogram_png as draw

    series = {label: _flatten(v) for label, v in groups.items()} if groups is not None else {"": _flatten(values)}
    return draw(series, title)


def teacher_entropy_summary(rollouts) -> dict[str, Any] | None:
    """Summary of the rollouts' teacher-side `token_entropy` column, or None when no row has one.

    Each value is already a per-response mean in bits (computed by the engine at sampling time), so the
    quartiles here are over responses, not tokens. `token_weighted_mean` weights each response by its
    `num_tokens` (the per-token mean over the corpus, comparable to `entropy_summary`'s mean) when that column
    is present. `method` is what the engines record: full distribution (hf) or top-k renormalised (vllm,
    openai), a lower bound of the full entropy.
    """
    import pandas as pd

    if S.TOKEN_ENTROPY not in rollouts:
        return None
    values = pd.to_numeric(rollouts[S.TOKEN_ENTROPY], errors="coerce")
    present = values.notna()
    if not present.any():
        return None
    vals = values[present].to_numpy(dtype=float)
    q1, median, q3 = np.percentile(vals, [25, 50, 75])
    out = {"mean_of_rows": float(vals.mean()), "median": float(median), "q1": float(q1), "q3": float(q3),
           "n_rows": int(len(values)), "n_rows_with_entropy": int(present.sum()), "token_weighted_mean": None}
    if S.NUM_TOKENS in rollouts:
        weights = pd.to_numeric(rollouts[S.NUM_TOKENS], errors="coerce")[present].to_numpy(dtype=float)
        ok = np.isfinite(weights) & (weights > 0)
        if ok.any():
            out["token_weighted_mean"] = float(np.average(vals[ok], weights=weights[ok]))
    return out
