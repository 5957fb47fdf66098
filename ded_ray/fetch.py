"""`ded fetch`: download every Hugging Face model a config names into its models root, once.

`models_to_fetch(config)` lists the Hub ids (teachers' `model`, `student.model`; built-ins, local folders and
endpoint teachers are skipped) with their pinned revisions. `fetch_models` downloads each one that the root
lacks with `huggingface_hub.snapshot_download` (token from HF_TOKEN) into the layout of
ded_ray/model_store.py: a local root gets it staged beside the target and renamed into place; a storage root
gets it staged in the cache dir, uploaded with pyarrow.fs, and its marker written last. `fetch_per_node`
runs the same on every alive Ray node (for a root that is a folder local to each node).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ded_ray.cache import cache_dir
from ded_ray.config import DEDConfig
from ded_ray.errors import UserError
from ded_ray.model_store import (
    DEFAULT_REVISION,
    MARKER,
    install_folder,
    is_remote,
    is_stored,
    open_root,
    stored_folder,
    write_marker,
)
from ded_ray.models import BUILTINS

PRESENT, FETCHED = "present", "fetched"
HUB_ENV_VARS = ("HF_TOKEN", "HF_ENDPOINT")  # what --per-node tasks need from the shell that runs `ded fetch`


class FetchError(UserError, RuntimeError):
    """A model could not be downloaded; the message names it, its revision and the fix."""


@dataclass(frozen=True)
class FetchTarget:
    repo_id: str
    revision: str = DEFAULT_REVISION


@dataclass(frozen=True)
class FetchOutcome:
    node: str
    repo_id: str
    revision: str
    status: str  # PRESENT or FETCHED
    location: str


def models_to_fetch(config: DEDConfig) -> list[FetchTarget]:
    """The Hub ids the config loads (teachers first, then the student), each once, with its revision."""
    names = [t.model for t in config.teachers if t.model and not t.endpoint] + [config.student.model]
    targets: list[FetchTarget] = []
    for name in names:
        if name in BUILTINS or Path(name).expanduser().exists() or "/" not in name or name.startswith((".", "/", "~")):
            continue
        target = FetchTarget(name, config.models.revisions.get(name, DEFAULT_REVISION))
        if target not in targets:
            targets.append(target)
    return targets


def fetch_models(targets: list[FetchTarget], root: str) -> list[FetchOutcome]:
    """Download each target the root lacks (its marker is the proof of a complete copy); one outcome each."""
    node = socket.gethostname()
    outcomes = []
    for target in targets:
        location = stored_folder(root, target.repo_id, target.revision)
        status = PRESENT if is_stored(root, target.repo_id, target.revision) else FETCHED
        if status == FETCHED:
            _fetch_one(target, root)
        outcomes.append(FetchOutcome(node, target.repo_id, target.revision, status, location))
    return outcomes


def _fetch_one(target: FetchTarget, root: str) -> None:
    # Stage on the root's own disk for a local root (the final rename is then atomic), else in the cache dir.
    if is_remote(root):
        parent = cache_dir("fetch-staging")
    else:
        parent = Path(stored_folder(str(Path(root).expanduser()), target.repo_id, target.revision)).parent
        parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
    try:
        commit = _download(target, staging)
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping, not the model
        if is_remote(root):
            _upload(staging, root, target, commit)
        else:
            write_marker(staging, target.repo_id, target.revision, commit)
            install_folder(staging, Path(stored_folder(str(Path(root).expanduser()), target.repo_id, target.revision)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(target: FetchTarget, folder: Path) -> str | None:
    """snapshot_download into `folder`; returns the commit it got. Hub errors become a FetchError with a fix."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = os.environ.get("HF_TOKEN") or None
    what = f"model {target.repo_id!r} at revision {target.revision!r}"
    try:
        # The revision is resolved to its commit first and that commit downloaded: a branch that moves
        # during the download cannot mix two versions, and the marker records what was fetched.
        commit = HfApi(token=token).model_info(target.repo_id, revision=target.revision).sha
        snapshot_download(target.repo_id, revision=commit, local_dir=str(folder), token=token)
        return commit
    except GatedRepoError:
        raise FetchError(f"{what} is gated: accept its licence on the model page, then set HF_TOKEN to a token "
                         "of that account and run `ded fetch` again") from None
    except RevisionNotFoundError:
        raise FetchError(f"{what}: the revision does not exist; fix `models.revisions` in the config "
                         "(a branch, tag or commit of that repository)") from None
    except RepositoryNotFoundError:
        raise FetchError(f"{what} was not found on the Hub: check the id (teachers' `model`, `student.model`); "
                         "a private repository needs HF_TOKEN set to a token with access") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise FetchError(f"could not download {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}. "
                         "Check this machine's network (HF_ENDPOINT, proxies) and disk, then run `ded fetch` "
                         "again; finished models are skipped") from None


def _upload(staging: Path, root: str, target: FetchTarget, commit: str | None) -> None:
    """Copy the downloaded folder to storage; the marker goes last, so readers never see a partial model."""
    import pyarrow.fs as pafs

    fs, base = open_root(root)
    destination = stored_folder(base, target.repo_id, target.revision)
    fs.create_dir(destination, recursive=True)
    pafs.copy_files(str(staging), destination, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    write_marker(staging, target.repo_id, target.revision, commit)
    pafs.copy_files(str(staging / MARKER), f"{destination}/{MARKER}", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def fetch_per_node(targets: list[FetchTarget], root: str) -> list[FetchOutcome]:
    """`fetch_models` once on every alive Ray node (pinned to it), for a root local to each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if is_remote(root):
        raise UserError(f"--per-node is for a models root local to each node; {root} is shared storage: run "
                        "`ded fetch` once, and each node copies a model from it the first time it loads it")
    # num_cpus=0: a download waits on the network, and the head of cluster.yaml advertises no CPUs at all.
    # The Hub settings of this shell (a token for gated models, a mirror) travel with the tasks: other nodes
    # do not have them.
    hub_env = {k: os.environ[k] for k in HUB_ENV_VARS if os.environ.get(k)}
    task = ray.remote(num_cpus=0, max_retries=0, runtime_env={"env_vars": hub_env} if hub_env else None)(fetch_models)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(targets, root)
            for n in nodes]
    outcomes: list[FetchOutcome] = []
    for node, ref in zip(nodes, refs):
        try:
            found = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, UserError):
                raise FetchError(f"on node {node['NodeManagerAddress']}: {cause}") from None
            raise
        outcomes += [FetchOutcome(f"{node['NodeManagerAddress']} ({o.node})", o.repo_id, o.revision, o.status,
                                  o.location) for o in found]
    return outcomes


def format_outcomes(outcomes: list[FetchOutcome]) -> str:
    return "\n".join(f"{o.node}: {o.repo_id}@{o.revision} {o.status} → {o.location}" for o in outcomes)
