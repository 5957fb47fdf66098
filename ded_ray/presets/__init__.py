"""Official benchmark formats as `format:` presets of a problem source.

`format: livecodebench | codeforces | leetcode | humaneval` reads the file by its suffix (as `auto` does) and
maps each row, in that benchmark's own published columns, to ours before io.py's usual validation; a row not
of that shape is rejected with a reason, never guessed at. One small module per preset (registry.py lists
them); a preset's source is a code source unless it sets `domain:`, and explicit `columns:` still win.
"""

from ded_ray.presets.base import Preset, PresetReject
from ded_ray.presets.registry import PRESETS, REASONS, get_preset

__all__ = ["PRESETS", "REASONS", "Preset", "PresetReject", "get_preset"]
