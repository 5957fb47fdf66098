"""The run directory: numbered stage outputs, rejected rows by reason, the manifest — and resume.

```
runs/<name>/
  01_problems/part-00000.parquet …  _SUCCESS      one folder per stage, written in parts
  rejected/<stage>/<reason>/part-*.parquet         every row a stage rejected, with its reason
  manifest.json                                    config, versions, git sha, funnel, timings
```

Resume: a stage folder with `_SUCCESS` is complete and is read back instead of recomputed; a stage cut
off midway keeps its finished parts (each written atomically: temp file, then rename), and the rerun skips
the ids already in them. The root may be a local path or a pyarrow-filesystem URI (s3://, gs://), so a
job on a cluster writes where every node can read.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ded_ray import schema as S

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    local = pafs.LocalFileSystem()
    import os

    return local, os.path.abspath(os.path.expanduser(root))


@dataclass
class StageDir:
    """One stage's output folder."""

    fs: pafs.FileSystem
    path: str
    name: str

    def is_complete(self) -> bool:
        return _exists(self.fs, f"{self.path}/{SUCCESS}")

    def parts(self) -> list[str]:
        if not _exists(self.fs, self.path):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path))
        return sorted(i.path for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))

    def write_part(self, table: pa.Table) -> str:
        """Write one part atomically; returns its path. Empty tables are skipped."""
        if table.num_rows == 0:
            return ""
        self.fs.create_dir(self.path, recursive=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp, final = f"{self.path}/.tmp-{name}", f"{self.path}/{name}"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, final)
        return final

    def read(self, columns: list[str] | None = None) -> pa.Table:
        parts = self.parts()
        if not parts:
            return pa.table({})
        tables = [pq.read_table(p, filesystem=self.fs, columns=columns) for p in parts]
        return pa.concat_tables(tables, promote_options="permissive")

    def done_ids(self, id_column: str) -> set[str]:
        """Ids already written by this stage (for resuming a stage cut off midway)."""
        ids: set[str] = set()
        for part in self.parts():
            ids.update(pq.read_table(part, filesystem=self.fs, columns=[id_column])[id_column].to_pylist())
        return ids

    def mark_complete(self, stats: dict[str, Any] | None = None) -> None:
        self.fs.create_dir(self.path, recursive=True)
        with self.fs.open_output_stream(f"{self.path}/{SUCCESS}") as out:
            out.write(json.dumps(stats or {}, indent=2).encode())

    def reset(self) -> None:
        if _exists(self.fs, self.path):
            self.fs.delete_dir(self.path)


class RunDir:
    """`<root>/<name>/`: stage folders, rejected rows, the manifest."""

    def __init__(self, root: str, name: str):
        self.fs, base = _filesystem(root)
        self.uri = f"{root.rstrip('/')}/{name}"
        self.path = f"{base.rstrip('/')}/{name}"
        self.fs.create_dir(self.path, recursive=True)

    def stage(self, index: int, name: str) -> StageDir:
        return StageDir(self.fs, f"{self.path}/{index:02d}_{name}", name)

    def file(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    # --- rejected rows -------------------------------------------------------------------------------

    def write_rejected(self, stage: str, table: pa.Table | pd.DataFrame) -> dict[str, int]:
        """Write the rows of `table` that carry a reject_reason under rejected/<stage>/<reason>/.

        Rewrites that stage's rejected folder whole, so it is idempotent on resume. Returns counts.
        """
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        folder = self.file("rejected", stage)
        if _exists(self.fs, folder):
            self.fs.delete_dir(folder)
        if S.REJECT_REASON not in table.column_names:
            return {}
        counts: dict[str, int] = {}
        reasons = table[S.REJECT_REASON]
        for reason in sorted(r for r in pc.unique(reasons).to_pylist() if r is not None):
            rows = table.filter(pc.equal(reasons, reason))
            StageDir(self.fs, f"{folder}/{_slug(reason)}", stage).write_part(rows)
            counts[reason] = rows.num_rows
        return counts

    def rejected_counts(self) -> dict[str, dict[str, int]]:
        """{stage: {reason: rows}} from what is on disk."""
        out: dict[str, dict[str, int]] = {}
        base = self.file("rejected")
        if not _exists(self.fs, base):
            return out
        for stage in self.fs.get_file_info(pafs.FileSelector(base)):
            for reason in self.fs.get_file_info(pafs.FileSelector(stage.path)):
                rows = sum(
                    pq.read_metadata(p.path, filesystem=self.fs).num_rows
                    for p in self.fs.get_file_info(pafs.FileSelector(reason.path))
                    if p.base_name.endswith(".parquet")
                )
                out.setdefault(stage.base_name, {})[reason.base_name] = rows
        return out

    # --- manifest ------------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        path = self.file(MANIFEST)
        if not _exists(self.fs, path):
            return {}
        with self.fs.open_input_stream(path) as src:
            return json.loads(src.read().decode())

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into manifest.json (dicts merge one level deep) and write it atomically."""
        manifest = self.read_manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tmp = self.file(f".{MANIFEST}.tmp")
        with self.fs.open_output_stream(tmp) as out:
            out.write(json.dumps(manifest, indent=2, default=str).encode())
        self.fs.move(tmp, self.file(MANIFEST))
        return manifest


def write_batches(stage: StageDir, batches: Iterable[pa.Table | pd.DataFrame], on_part=None) -> int:
    """Write a stream of batches as parts; returns the rows written. `on_part(table)` sees each part."""
    rows = 0
    for batch in batches:
        table = pa.Table.from_pandas(batch, preserve_index=False) if isinstance(batch, pd.DataFrame) else batch
        stage.write_part(table)
        rows += table.num_rows
        if on_part is not None:
            on_part(table)
    return rows


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _slug(reason: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in reason)[:80] or "unknown"
