"""What `ded plan` needs to know of a model without loading (or even having) its weights.

From the model's own config.json when the model resolves here (a local folder, the built-in, the HF cache, the
models root); otherwise from `KNOWN`, the config.json values of the paper's models as published on their model
cards, so a laptop with no 32B download can still plan a 32B run. Parameters are counted on the meta device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# config.json of the paper's models (huggingface.co/<id>/blob/main/config.json): only the shape keys.
_QWEN25_32B = dict(model_type="qwen2", hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                   num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False)
KNOWN: dict[str, dict] = {
    "Qwen/QwQ-32B": {**_QWEN25_32B, "max_position_embeddings": 40960},
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": {**_QWEN25_32B, "max_position_embeddings": 131072},
    "Qwen/Qwen2.5-32B-Instruct": {**_QWEN25_32B, "max_position_embeddings": 32768},
    "Qwen/Qwen3-32B": dict(model_type="qwen3", hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                           num_attention_heads=64, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                           tie_word_embeddings=False, max_position_embeddings=40960),
}


@dataclass(frozen=True)
class ModelFacts:
    name: str
    num_params: int
    config: dict  # config.json (or its KNOWN shape keys)
    source: str  # "config.json at <path>" or "published config (not downloaded here)"
    path: str | None = None  # the local folder, when the model resolves here (its tokenizer renders prompts)

    @property
    def max_position_embeddings(self) -> int | None:
        return self.config.get("max_position_embeddings")

    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.config["hidden_size"] // self.config["num_attention_heads"])

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Key + value cache of one token over every layer (vLLM's accounting, no sliding window)."""
        kv_heads = self.config.get("num_key_value_heads") or self.config["num_attention_heads"]
        return 2 * self.config["num_hidden_layers"] * kv_heads * self.head_dim() * dtype_bytes

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        return self.num_params * dtype_bytes


@lru_cache(maxsize=32)
def model_facts(name: str, root: str | None = None, revision: str = "main") -> ModelFacts:
    """Facts of a model by the name a config gives it; ValueError naming the fix when nothing is known.

    With a storage models root (`models.root: s3://...`) only the stored config.json is read: resolving would
    copy the whole model to this machine."""
    from ded_ray.model_store import is_remote
    from ded_ray.models import ModelNotFoundError, resolve_model
    from ded_ray.train.memory import count_parameters

    if root and is_remote(root) and "/" in name and not Path(name).exists():
        stored = _stored_config(root, name, revision)
        if stored is not None:
            return ModelFacts(name, _count_from_config(stored), stored, f"config.json under {root}")
    try:
        path = resolve_model(name)
    except ModelNotFoundError as exc:
        if name not in KNOWN:
            raise ValueError(f"model {name!r}: {exc} (ded plan needs its config.json; `ded fetch` downloads it)") from None
        return ModelFacts(name, _count_from_config(KNOWN[name]), KNOWN[name], "published config (not downloaded here)")
    num_params, config = count_parameters(str(path))
    return ModelFacts(name, num_params, config, f"config.json at {path}", str(path))


def _stored_config(root: str, name: str, revision: str) -> dict | None:
    from ded_ray.model_store import is_stored, open_root, stored_folder

    if not is_stored(root, name, revision):
        return None
    fs, base = open_root(root)
    with fs.open_input_stream(stored_folder(base, name, revision) + "/config.json") as f:
        return json.loads(f.read())


def _count_from_config(shape: dict) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**{k: v for k, v in shape.items() if k != "architectures"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
