"""Every preset by its `format:` name, and every reason one may reject a row for."""

from __future__ import annotations

from ded_ray.presets import codeforces, humaneval, leetcode, livecodebench
from ded_ray.presets.base import Preset

PRESETS: dict[str, Preset] = {p.name: p for p in (
    livecodebench.PRESET, codeforces.PRESET, leetcode.PRESET, humaneval.PRESET,
)}
# Beyond io.py's own reasons; in registry order, each once.
REASONS: tuple[str, ...] = tuple(dict.fromkeys(r for p in PRESETS.values() for r in p.reasons))


def get_preset(name: str) -> Preset | None:
    """The preset called `name`, or None for a file format (auto, jsonl, parquet, datasets)."""
    return PRESETS.get(name)
