"""Run one converter: read the source, convert every row, write the problem file and its rejects, summarise.

Output: `<out>` (jsonl, one problem per line) and `<out minus .jsonl>.rejected.jsonl` beside it (one line
per rejected source row: `reason`, `detail`, where the row came from, and a shortened copy of the row).
Both are written to temporary names and renamed at the end, so an interrupted run never leaves a partial
file that looks finished. A problem id seen twice is rejected as `duplicate_id` (the reader would too).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ded_ray.prepare.base import Converter, Reject, SourceRow
from ded_ray.prepare.fetch import source_files
from ded_ray.prepare.read import iter_rows

DUPLICATE_ID = "duplicate_id"
PREVIEW_CHARS = 300  # per text cell of a rejected row: enough to recognise it, not its megabytes of tests
PREVIEW_ITEMS = 3


@dataclass
class PrepareSummary:
    name: str
    out: Path
    rejected_path: Path
    files: list[Path]
    written: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> rows

    def report(self) -> str:
        lines = [f"{self.name}: {self.written} problems → {self.out}"]
        total = sum(self.rejected.values())
        if total:
            reasons = ", ".join(f"{reason} {n}" for reason, n in self.rejected.most_common())
            lines.append(f"  rejected {total} ({reasons}) → {self.rejected_path}")
        else:
            lines.append("  rejected 0")
        lines.append(f"  read {len(self.files)} file(s): {', '.join(str(f) for f in self.files[:4])}"
                     + (" …" if len(self.files) > 4 else ""))
        return "\n".join(lines)


def rejected_path_for(out: Path) -> Path:
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.rejected.jsonl")


def run_converter(converter: Converter, out: str | None = None, source: str | None = None,
                  limit: int | None = None) -> PrepareSummary:
    """Write `converter`'s problem file; `source` = a local copy instead of the Hub; `limit` = stop after N."""
    files = source_files(converter.hub, source)
    out_path = Path(out or converter.out_path)
    summary = PrepareSummary(converter.name, out_path, rejected_path_for(out_path), files)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_name(out_path.name + ".tmp")
    tmp_rejected = summary.rejected_path.with_name(summary.rejected_path.name + ".tmp")
    seen: set[str] = set()
    try:
        with open(tmp_out, "w", encoding="utf-8") as good, open(tmp_rejected, "w", encoding="utf-8") as bad:
            for item in iter_rows(files, converter.required, converter.read_columns):
                if limit is not None and summary.written >= limit:
                    break
                # a jsonl line that was not JSON comes already rejected
                row, result = (item[1], item[0]) if isinstance(item, tuple) else (item, converter.convert(item))
                if not isinstance(result, Reject) and str(result["problem_id"]) in seen:
                    result = Reject(DUPLICATE_ID, f"problem_id {result['problem_id']!r} seen before")
                if isinstance(result, Reject):
                    summary.rejected[result.reason] += 1
                    bad.write(json.dumps(_rejected_line(result, row), ensure_ascii=False, default=str) + "\n")
                else:
                    seen.add(str(result["problem_id"]))
                    good.write(json.dumps(result, ensure_ascii=False, default=str) + "\n")
                    summary.written += 1
        os.replace(tmp_out, out_path)
        os.replace(tmp_rejected, summary.rejected_path)
    finally:
        for tmp in (tmp_out, tmp_rejected):
            tmp.unlink(missing_ok=True)
    return summary


def _rejected_line(reject: Reject, row: SourceRow) -> dict:
    return {"reason": reject.reason, "detail": reject.detail, "file": str(row.file), "index": row.index,
            "row": _preview(row.data)}


def _preview(value: Any) -> Any:
    """`value` with long texts and lists cut, so a rejects file stays readable."""
    if isinstance(value, str):
        return value if len(value) <= PREVIEW_CHARS else value[:PREVIEW_CHARS] + f"… ({len(value)} chars)"
    if isinstance(value, dict):
        return {k: _preview(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        head = [_preview(v) for v in value[:PREVIEW_ITEMS]]
        return head + ([f"… ({len(value)} items)"] if len(value) > PREVIEW_ITEMS else [])
    return value
