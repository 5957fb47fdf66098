"""`ded fetch` and the models root, against a local fake Hugging Face Hub (tests/fake_hub.py): nothing is
downloaded from the internet.

A "storage" root is a `file://` URI: pyarrow resolves it to its LocalFileSystem, and model_store treats any
`scheme://` root as remote storage (upload on fetch; copy into the node-local cache dir on resolve), so
these tests run the same code an s3:// or gs:// root runs, minus the cloud filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ded_ray.cli import main
from ded_ray.model_store import MARKER, REVISIONS_ENV, ROOT_ENV
from ded_ray.models import ModelNotFoundError, build_tiny_model, resolve_model
from fake_hub import FakeHub, fake_commit

REPO = "tiny-org/tiny-chat"
PINNED = "v1"


@pytest.fixture(scope="module")
def repo_folders(tmp_path_factory) -> dict[str, Path]:
    """Two revisions of one tiny model; v1 carries a file that tells them apart."""
    base = tmp_path_factory.mktemp("hub")
    main_rev = shutil.copytree(build_tiny_model(), base / "main")
    v1 = shutil.copytree(main_rev, base / "v1")
    (v1 / "REVISION.txt").write_text("v1")
    return {"main": main_rev, PINNED: v1}


@pytest.fixture
def hub(repo_folders, monkeypatch):
    import huggingface_hub.constants as hf_constants

    with FakeHub({REPO: repo_folders}) as fake:
        # huggingface_hub reads HF_ENDPOINT at import (already done here); the env var is for new processes.
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setattr(hf_constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
        # set (empty = no root), not deleted: monkeypatch then removes what `init_ray` writes into os.environ
        # during a test, so no root leaks into later tests
        monkeypatch.setenv(ROOT_ENV, "")
        monkeypatch.setenv(REVISIONS_ENV, "")
        yield fake


def write_config(path: Path, root: str, revisions: dict[str, str] | None = None, student: str = REPO) -> Path:
    config = {
        "models": {"root": root, "revisions": revisions or {}},
        "student": {"model": student},
        "teachers": [
            {"name": "same", "model": REPO},  # the student's model again: fetched once
            {"name": "builtin", "model": "smollm2-135m"},  # nothing to fetch
            {"name": "remote", "endpoint": "http://127.0.0.1:9/v1"},  # not ours to fetch
        ],
        "ray": {"num_cpus": 1},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_fetch_lands_in_the_layout_once_and_resolves_from_the_root(hub, tmp_path, capsys, monkeypatch):
    root = tmp_path / "models"
    config = write_config(tmp_path / "c.yaml", str(root))

    assert main(["fetch", "--config", str(config)]) == 0
    assert f"{REPO}@main fetched" in capsys.readouterr().out
    folder = root / "tiny-org--tiny-chat" / "main"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not (folder / ".cache").exists()  # huggingface_hub's bookkeeping is dropped
    marker = json.loads((folder / MARKER).read_text())
    assert marker == {"repo_id": REPO, "revision": "main", "commit": fake_commit(REPO, "main")}
    assert len(hub.downloads()) > 0 and not (root / "tiny-org--tiny-chat" / "REVISION.txt").exists()

    served = len(hub.downloads())
    assert main(["fetch", "--config", str(config)]) == 0
    assert f"{REPO}@main present" in capsys.readouterr().out
    assert len(hub.downloads()) == served  # the marker says complete: nothing downloaded again

    monkeypatch.setenv(ROOT_ENV, str(root))
    assert resolve_model(REPO) == folder


def test_pinned_revision_is_fetched_and_resolved(hub, tmp_path, monkeypatch):
    root = tmp_path / "models"
    config = write_config(tmp_path / "c.yaml", str(root), revisions={REPO: PINNED})

    assert main(["fetch", "--config", str(config)]) == 0
    assert f"GET /api/models/{REPO}/revision/{PINNED}" in hub.requests
    folder = root / "tiny-org--tiny-chat" / PINNED
    assert (folder / "REVISION.txt").read_text() == "v1"
    assert not (root / "tiny-org--tiny-chat" / "main").exists()

    monkeypatch.setenv(ROOT_ENV, str(root))
    monkeypatch.setenv(REVISIONS_ENV, json.dumps({REPO: PINNED}))
    assert resolve_model(REPO) == folder


def test_missing_repo_and_revision_give_the_fix(hub, tmp_path, capsys):
    root = str(tmp_path / "models")
    assert main(["fetch", "--config", str(write_config(tmp_path / "a.yaml", root, student="tiny-org/nope"))]) == 1
    err = capsys.readouterr().err
    assert "'tiny-org/nope'" in err and "revision 'main'" in err and "HF_TOKEN" in err

    bad_rev = write_config(tmp_path / "b.yaml", root, revisions={REPO: "no-such-tag"})
    assert main(["fetch", "--config", str(bad_rev)]) == 1
    err = capsys.readouterr().err
    assert "'no-such-tag'" in err and "models.revisions" in err
    # The teachers' REPO@main was fetched; the failures left neither a folder nor a staging leftover.
    left = sorted(p.relative_to(tmp_path / "models").as_posix() for p in (tmp_path / "models").glob("*/*"))
    assert left == ["tiny-org--tiny-chat/main"]


def test_resolve_names_the_root_and_fetch_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match=r"models root .*models.*ded fetch --config"):
        resolve_model("tiny-org/absent")


def test_storage_root_is_uploaded_then_copied_once_into_the_node_cache(hub, tmp_path, monkeypatch):
    storage = tmp_path / "bucket"
    uri = f"file://{storage}"
    assert main(["fetch", "--config", str(write_config(tmp_path / "c.yaml", uri))]) == 0
    uploaded = storage / "tiny-org--tiny-chat" / "main"
    assert (uploaded / MARKER).is_file() and (uploaded / "config.json").is_file()

    monkeypatch.setenv("DED_CACHE_DIR", str(tmp_path / "node-cache"))
    monkeypatch.setenv(ROOT_ENV, uri)
    local = resolve_model(REPO)
    assert local.is_relative_to(tmp_path / "node-cache") and (local / "config.json").is_file()
    shutil.rmtree(uploaded)  # the node keeps its copy: no second read of storage
    assert resolve_model(REPO) == local


def test_per_node_runs_one_task_per_alive_node(ray_local, hub, tmp_path, capsys):
    root = tmp_path / "models"
    config = write_config(tmp_path / "c.yaml", str(root))
    assert main(["fetch", "--per-node", "--config", str(config)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if REPO in line]
    alive = [n for n in ray_local.nodes() if n["Alive"]]
    assert len(lines) == len(alive) == 1
    assert alive[0]["NodeManagerAddress"] in lines[0] and "fetched" in lines[0]
    assert (root / "tiny-org--tiny-chat" / "main" / MARKER).is_file()


def test_init_ray_hands_the_root_to_workers(hub, tmp_path):
    """A fresh process: init_ray with a models section, then resolve_model inside a Ray task.

    The child's environment has no DED_MODELS_ROOT and init_ray sets it in the driver only after ray.init,
    so the worker can have it only from the job's runtime_env.
    """
    root = tmp_path / "models"
    assert main(["fetch", "--config", str(write_config(tmp_path / "c.yaml", str(root)))]) == 0
    script = textwrap.dedent(f"""
        import json, os, ray
        from ded_ray.config import ModelsConfig, RayConfig
        from ded_ray.ray_session import init_ray
        assert "{ROOT_ENV}" not in os.environ
        init_ray(RayConfig(num_cpus=1), ModelsConfig(root={str(root)!r}))

        @ray.remote(num_cpus=0)
        def where():
            from ded_ray.models import resolve_model
            return str(resolve_model({REPO!r})), ray.get_runtime_context().runtime_env.get("env_vars", {{}})

        print(json.dumps(ray.get(where.remote())))
    """)
    env = {k: v for k, v in os.environ.items() if k not in (ROOT_ENV, REVISIONS_ENV, "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    path, env_vars = json.loads(done.stdout.strip().splitlines()[-1])
    assert path == str(root / "tiny-org--tiny-chat" / "main")
    assert env_vars[ROOT_ENV] == str(root)


def test_prompt_stage_resolves_a_hub_id_where_it_runs(hub, tmp_path, monkeypatch):
    """Rollout hands actors the model name (models.model_ref); the stage finds its node's copy itself."""
    from ded_ray.stages.prompt import PromptStage

    root = tmp_path / "models"
    assert main(["fetch", "--config", str(write_config(tmp_path / "c.yaml", str(root)))]) == 0
    monkeypatch.setenv(ROOT_ENV, str(root))
    stage = PromptStage(REPO)
    assert stage.tokenizer.name_or_path == str(root / "tiny-org--tiny-chat" / "main")
