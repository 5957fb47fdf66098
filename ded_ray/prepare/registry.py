"""The `ded prepare` names: one converter per problem file the shipped configs read (ded-32b.yaml).

| name       | source (Hugging Face dataset)  | writes                 | config entry               |
|------------|--------------------------------|------------------------|----------------------------|
| s1k        | simplescaling/s1K              | data/s1k.jsonl         | problems.sources (math)    |
| codeforces | open-r1/codeforces (train)     | data/codeforces.jsonl  | problems.sources (code)    |
| aime2024   | HuggingFaceH4/aime_2024        | data/aime2024.jsonl    | eval + decontaminate       |
| aime2025   | opencompass/AIME2025           | data/aime2025.jsonl    | eval + decontaminate       |
| math500    | HuggingFaceH4/MATH-500         | data/math500.jsonl     | eval + decontaminate       |
"""

from __future__ import annotations

from ded_ray.errors import UserError
from ded_ray.prepare import aime2024, aime2025, codeforces, math500, s1k
from ded_ray.prepare.base import Converter
from ded_ray.prepare.run import PrepareSummary, run_converter

CONVERTERS: dict[str, Converter] = {
    c.name: c for c in (s1k.CONVERTER, codeforces.CONVERTER, aime2024.CONVERTER, aime2025.CONVERTER,
                        math500.CONVERTER)
}


def prepare(name: str, out: str | None = None, source: str | None = None, limit: int | None = None) -> PrepareSummary:
    """Write problem file `name` (default path data/<name>.jsonl) from its Hub dataset or a local `source`."""
    if name not in CONVERTERS:
        raise UserError(f"unknown dataset {name!r}; `ded prepare` knows {sorted(CONVERTERS)}")
    return run_converter(CONVERTERS[name], out=out, source=source, limit=limit)
