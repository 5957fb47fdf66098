"""The run directory's folders and files: stage outputs in parts, rejected rows by reason, JSON artefacts.

```
runs/<name>/
  <number>_<stage>/part-<ids hash>.parquet, _SUCCESS   one folder per stage of the plan, written in parts
  rejected/<stage>/<reason>/part-*.parquet          every row a stage rejected, with its reason
  manifest.json, eval.json, smoke.json, …           written through `read_json` / `write_json`
```

Resume: a stage folder with `_SUCCESS` is complete and is read back instead of recomputed; a stage cut
off midway keeps its finished parts (each written atomically: temp file, then rename, under a name derived
from its row ids, so writing the same rows again replaces the part instead of duplicating it), and the
rerun skips the ids already in them. The root may be a local path or a pyarrow-filesystem URI (s3://,
gs://), so a job on a cluster writes where every node can read, and Ray Data's workers write parts there
themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
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
EVAL_FILE = "eval.json"  # {model label: {"model", "benchmarks"}}: written by steps.evaluate, read by the report


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root))


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

    def write_part(self, table: pa.Table, name: str | None = None) -> str:
        """Write one part atomically (as `name`, default a fresh unique name); returns its path. Empty
        tables are skipped."""
        if table.num_rows == 0:
            return ""
        self.fs.create_dir(self.path, recursive=True)
        name = name or f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp, final = f"{self.path}/.tmp-{uuid.uuid4().hex[:8]}-{name}", f"{self.path}/{name}"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, final)
        return final

    def read(self, columns: list[str] | None = None) -> pa.Table:
        parts = self.parts()
        if not parts:
            return pa.table({})
        tables = [pq.read_table(p, filesystem=self.fs, columns=self._present(p, columns)) for p in parts]
        return pa.concat_tables(tables, promote_options="permissive")  # a column a part lacks reads as nulls

    def _present(self, part: str, columns: list[str] | None) -> list[str] | None:
        """The `columns` that `part` has (a batch without rejects has no reject_reason column, for one)."""
        if columns is None:
            return None
        names = set(pq.read_schema(part, filesystem=self.fs).names)
        return [c for c in columns if c in names]

    def num_rows(self) -> int:
        """Rows written so far (from the parts' metadata: no row is read)."""
        return sum(pq.read_metadata(p, filesystem=self.fs).num_rows for p in self.parts())

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


def part_name(ids: Iterable[str]) -> str:
    """A part's file name from its row ids: the same rows always land in the same part."""
    digest = hashlib.blake2b(digest_size=12)
    for row_id in ids:
        digest.update(str(row_id).encode())
        digest.update(b"\0")
    return f"part-{digest.hexdigest()}.parquet"


class RunDir:
    """`<root>/<name>/`: stage folders, rejected rows, the manifest and the run's JSON artefacts."""

    def __init__(self, root: str, name: str):
        self.root, self.name = str(root), str(name)
        self.fs, base = _filesystem(self.root)
        self.uri = f"{self.root.rstrip('/')}/{name}"
        self.path = f"{base.rstrip('/')}/{name}"
        self.fs.create_dir(self.path, recursive=True)

    def __reduce__(self):  # travels to Ray workers as (root, name): they reopen it on their own node
        root = self.root if "://" in self.root else os.path.abspath(os.path.expanduser(self.root))
        return RunDir, (root, self.name)

    def stage(self, spec) -> StageDir:
        """The folder of a plan stage (`ded_ray.plan.StageSpec`)."""
        return StageDir(self.fs, f"{self.path}/{spec.folder}", spec.name)

    def sub(self, *names: str) -> "RunDir":
        """A run directory inside this one (`smoke/<teacher>`, `ablate/<arm>`, `eval/<label>`)."""
        *folders, name = names
        return RunDir("/".join([self.uri, *folders]), name)

    def file(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def exists(self, *parts: str) -> bool:
        return _exists(self.fs, self.file(*parts))

    def size_bytes(self) -> int:
        """Bytes of all files under the run directory (what the run costs on storage)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        return sum(i.size for i in infos if i.type == pafs.FileType.File)

    # --- JSON artefacts (eval.json, smoke.json, ablation.json, arm.json …) ----------------------------

    def read_json(self, name: str) -> dict[str, Any]:
        """The JSON object in `name`, or {} when the run has not written it yet."""
        if not self.exists(name):
            return {}
        with self.fs.open_input_stream(self.file(name)) as src:
            return json.loads(src.read().decode())

    def write_json(self, name: str, value: dict[str, Any]) -> str:
        """Write `value` to `name` atomically (temp file, then rename); returns the path."""
        path, tmp = self.file(name), self.file(f".{name}.tmp")
        with self.fs.open_output_stream(tmp) as out:
            out.write(json.dumps(value, indent=2, default=str).encode())
        self.fs.move(tmp, path)
        return path

    # --- rejected rows -------------------------------------------------------------------------------

    def write_rejected(self, stage: str, table: pa.Table | pd.DataFrame, part: str | None = None) -> dict[str, int]:
        """Write the rows of `table` that carry a reject_reason under rejected/<stage>/<reason>/.

        With `part` (a stage part's name) the rows are that part's rejects, written under the same name, so
        rewriting a part rewrites its rejects; without it, the stage's rejected folder is replaced whole.
        Returns {reason: rows}.
        """
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        folder = self.file("rejected", stage)
        if part is None and _exists(self.fs, folder):
            self.fs.delete_dir(folder)
        if S.REJECT_REASON not in table.column_names:
            return {}
        counts: dict[str, int] = {}
        reasons = table[S.REJECT_REASON]
        for reason in sorted(r for r in pc.unique(reasons).to_pylist() if r is not None):
            rows = table.filter(pc.equal(reasons, reason))
            StageDir(self.fs, f"{folder}/{_slug(reason)}", stage).write_part(rows, name=part)
            counts[reason] = rows.num_rows
        return counts

    def prune_rejected(self, stage: str, parts: Iterable[str]) -> None:
        """Delete rejected rows of `stage` whose stage part is not in `parts` (left by a part never finished)."""
        keep = {p.rsplit("/", 1)[-1] for p in parts}
        base = self.file("rejected", stage)
        if not _exists(self.fs, base):
            return
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type == pafs.FileType.File and info.base_name.startswith("part-") and info.base_name not in keep:
                self.fs.delete_file(info.path)

    def delete_rejected(self, stage: str) -> None:
        if self.exists("rejected", stage):
            self.fs.delete_dir(self.file("rejected", stage))

    def rejected_counts(self, only: str | None = None) -> dict[str, dict[str, int]]:
        """{stage: {reason: rows}} from what is on disk (parquet metadata only), for every stage or `only`."""
        out: dict[str, dict[str, int]] = {}
        base = self.file("rejected")
        if not _exists(self.fs, base):
            return out
        for stage in self.fs.get_file_info(pafs.FileSelector(base)):
            if only is not None and stage.base_name != only:
                continue
            for reason in self.fs.get_file_info(pafs.FileSelector(stage.path)):
                rows = sum(
                    pq.read_metadata(p.path, filesystem=self.fs).num_rows
                    for p in self.fs.get_file_info(pafs.FileSelector(reason.path))
                    if p.base_name.endswith(".parquet")
                )
                if rows:
                    out.setdefault(stage.base_name, {})[reason.base_name] = rows
        return out

    # --- manifest ------------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        return self.read_json(MANIFEST)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into manifest.json (dicts merge one level deep) and write it atomically."""
        manifest = self.read_manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write_json(MANIFEST, manifest)
        return manifest


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _slug(reason: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in reason)[:80] or "unknown"
