"""Find a converter's source files: a local file or folder (`--source`), else a download from the Hub.

The download is `huggingface_hub.snapshot_download` of just the files the converter reads (its patterns),
into the usual Hugging Face cache, with `HF_TOKEN` from the environment for gated or rate-limited repos.
`datasets` is not needed: the files are parquet or jsonl and are read with pyarrow / json.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from ded_ray.errors import UserError
from ded_ray.prepare.base import HubDataset


def source_files(hub: HubDataset, local: str | None) -> list[Path]:
    """The files to read, in a stable order (shards by name)."""
    if local is not None:
        return local_files(hub, Path(local).expanduser())
    return local_files(hub, download(hub))


def local_files(hub: HubDataset, path: Path) -> list[Path]:
    """`path` itself, or the files under the folder `path` that match the source's patterns.

    A folder laid out like the Hub repo (e.g. `data/train-00000-of-00001.parquet`) matches the patterns as
    they are; a folder holding the files directly matches their file-name part (`train-*.parquet`).
    """
    if not path.exists():
        raise UserError(f"--source {path} does not exist: give a downloaded file or folder of {hub.repo_id}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    as_in_repo = [p for p in files if _matches(p.relative_to(path).as_posix(), hub.patterns)]
    if as_in_repo:
        return as_in_repo
    by_name = [p for p in files if _matches(p.name, tuple(pat.rsplit("/", 1)[-1] for pat in hub.patterns))]
    if by_name:
        return by_name
    found = ", ".join(p.relative_to(path).as_posix() for p in files[:10]) or "nothing"
    raise UserError(f"--source {path} holds no file matching {list(hub.patterns)} (the files of "
                    f"{hub.repo_id}); it holds {found}. Pass the file itself, or the folder it was downloaded to")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def download(hub: HubDataset) -> Path:
    """Download the source's files from the Hub (cached); the local snapshot folder."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise UserError("downloading needs huggingface_hub: pip install huggingface_hub "
                        f"(or download {hub.repo_id} yourself and pass --source)") from None
    try:
        folder = snapshot_download(repo_id=hub.repo_id, repo_type="dataset", revision=hub.revision,
                                   allow_patterns=list(hub.patterns), token=os.environ.get("HF_TOKEN"))
    # offline (LocalEntryNotFoundError is an OSError), no access or no such repo (HTTP errors), bad id (ValueError)
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise UserError(
            f"could not download {hub.repo_id} {list(hub.patterns)} from the Hugging Face Hub: "
            f"{type(exc).__name__}: {exc}. Set HF_TOKEN if the dataset is gated, or download the files "
            "yourself and pass --source FILE_OR_DIR"
        ) from None
    return Path(folder)
