"""The models root: where `ded fetch` puts Hugging Face models so that every node can load them.

Layout (the same on a local folder and on storage):

    <root>/<org>--<name>/<revision>/          the repository's files, as on the Hub
    <root>/<org>--<name>/<revision>/.ded_complete.json   written last: {repo_id, revision, commit}

`<revision>` is the pinned revision (`models.revisions`, a branch, tag or commit; "/" becomes "--"), or
"main". A folder without the marker is an interrupted download and is never used.

The root reaches Ray workers as environment variables (`models_env`, put into the job's runtime_env by
`ray_session.init_ray`), so `resolve_model` runs on the node that loads the model and finds that node's
copy. A local root is used in place; a storage root (any `scheme://` URI: s3://, gs://, file://) is copied
once per node into the node-local cache dir (staged, then renamed) and the copy is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ded_ray.cache import cache_dir

ROOT_ENV = "DED_MODELS_ROOT"
REVISIONS_ENV = "DED_MODEL_REVISIONS"  # a JSON object: HF id -> revision
MARKER = ".ded_complete.json"
DEFAULT_REVISION = "main"


def models_env(root: str | None, revisions: dict[str, str] | None = None) -> dict[str, str]:
    """The env vars that carry a models root (and pinned revisions) to other processes; {} without a root."""
    if not root:
        return {}
    env = {ROOT_ENV: root}
    if revisions:
        env[REVISIONS_ENV] = json.dumps(revisions, sort_keys=True)
    return env


def configured_root() -> str | None:
    return os.environ.get(ROOT_ENV) or None


def pinned_revision(repo_id: str) -> str:
    """The revision this process was told to use for `repo_id` (DED_MODEL_REVISIONS), else "main"."""
    revisions = json.loads(os.environ.get(REVISIONS_ENV) or "{}")
    return revisions.get(repo_id) or DEFAULT_REVISION


def is_remote(root: str) -> bool:
    return "://" in root


def stored_folder(root: str, repo_id: str, revision: str) -> str:
    """Where `repo_id` at `revision` lives under `root` (a path or URI, joined with "/")."""
    return "/".join([root.rstrip("/"), repo_id.replace("/", "--"), revision.replace("/", "--")])


def open_root(root: str):
    """(pyarrow filesystem, path inside it) of a root; a plain path is the local filesystem."""
    import pyarrow.fs as pafs

    if is_remote(root):
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())


def is_stored(root: str, repo_id: str, revision: str) -> bool:
    """True when the folder is complete (its marker exists)."""
    import pyarrow.fs as pafs

    fs, base = open_root(root)
    marker = stored_folder(base, repo_id, revision) + "/" + MARKER
    return fs.get_file_info(marker).type == pafs.FileType.File


def find_stored(repo_id: str, root: str, revision: str) -> Path | None:
    """A local folder holding `repo_id` at `revision` from `root`, or None when the root lacks it.

    A storage root is copied into this node's cache dir on first use (later calls reuse the copy).
    """
    if not is_remote(root):
        folder = Path(stored_folder(str(Path(root).expanduser()), repo_id, revision))
        return folder if (folder / MARKER).is_file() else None
    # One cache folder per root, so two roots holding the same id never mix.
    root_key = hashlib.blake2b(root.rstrip("/").encode(), digest_size=6).hexdigest()
    local = Path(stored_folder(str(cache_dir("models", "stored", root_key)), repo_id, revision))
    if (local / MARKER).is_file():
        return local
    if not is_stored(root, repo_id, revision):
        return None
    _copy_to_local(root, repo_id, revision, local)
    return local


def _copy_to_local(root: str, repo_id: str, revision: str, target: Path) -> None:
    """Copy the stored folder next to `target`, then rename: a half-copied folder is never taken for a model."""
    import pyarrow.fs as pafs

    fs, base = open_root(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        pafs.copy_files(stored_folder(base, repo_id, revision), str(staging), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        install_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install_folder(staging: Path, target: Path) -> None:
    """Rename a finished folder into place; another process that got there first wins (same content)."""
    if (target / MARKER).is_file():
        return
    if target.exists():  # an incomplete leftover (no marker): replace it
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        if not (target / MARKER).is_file():
            raise


def write_marker(folder: Path, repo_id: str, revision: str, commit: str | None) -> None:
    (folder / MARKER).write_text(json.dumps({"repo_id": repo_id, "revision": revision, "commit": commit}))
