"""`ded prepare NAME`: write the problem files the shipped configs name, from their public sources.

Each name (registry.py lists them) is one small converter module: it knows its Hugging Face dataset, the
columns it needs, and how one source row becomes one problem row in the format `io.read_problems` reads for
the matching `ded-32b.yaml` entry, or a rejection with a reason. `prepare(name, out, source)` downloads the
files (or reads a local copy), writes `data/<name>.jsonl` and `data/<name>.rejected.jsonl`, and returns
the counts.
"""

from ded_ray.prepare.registry import CONVERTERS, prepare

__all__ = ["CONVERTERS", "prepare"]
