"""cluster.yaml is a valid Ray cluster launcher config, and the 32B recipe's requests fit its node groups.

Fast tier: no cloud, no Ray started. Validation uses Ray's own autoscaler schema (ray/autoscaler/
ray-schema.json, with jsonschema) and the same `prepare_config` + `validate_config` that `ray up` runs.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from ded_ray.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_schema_file_is_rays_own():
    assert SCHEMA.exists(), f"Ray {ray.__version__} no longer ships {SCHEMA}: find its autoscaler schema"


def test_cluster_yaml_matches_rays_autoscaler_schema(cluster):
    jsonschema.validate(cluster, json.loads(SCHEMA.read_text()))


def test_cluster_yaml_passes_ray_up_validation(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))  # merges the AWS defaults, as `ray up` does
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_the_validation_rejects_a_broken_config(cluster):
    """The schema check can fail: a typo'd node-type key is an error, not ignored."""
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu-rollout"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_groups_autoscale_from_zero_with_an_idle_timeout(cluster):
    groups = cluster["available_node_types"]
    assert set(groups) == {"head", "gpu-rollout", "gpu-train", "cpu-verify"}
    for name in ("gpu-rollout", "gpu-train", "cpu-verify"):
        assert groups[name]["min_workers"] == 0, f"{name} should start at zero nodes"
        assert groups[name]["max_workers"] >= 1
    assert groups["head"]["resources"] == {"CPU": 0}  # nothing but drivers and Ray's services on the head
    assert cluster["idle_timeout_minutes"] > 0
    assert cluster["max_workers"] >= sum(g.get("max_workers", 0) for n, g in groups.items() if n != "head")


def test_image_matches_the_local_ray_and_python(cluster):
    """A Ray client and `ray job submit` need the cluster's Ray (and Python) version to equal theirs."""
    image = cluster["docker"]["image"]
    assert f":{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-cu" in image, image


def test_every_node_installs_ded_ray_with_the_cuda_vllm_extra(cluster):
    commands = " ".join(cluster["setup_commands"])
    assert "ded_ray[vllm]" in commands
    assert cluster["file_mounts"]["/home/ray/ded_ray"] == "."


def test_token_auth_is_on_for_every_ray_process(cluster):
    for command in cluster["head_start_ray_commands"][1:] + cluster["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in command
    assert "~/.ray/auth_token" in cluster["file_mounts"].values()
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--ray-client-server-port=10001" in head  # the port the notebook connects to


def test_the_32b_recipe_fits_the_groups(cluster):
    """Each request of ded-32b.yaml fits one node of the group meant for it, and the pools can reach max."""
    config = load_config("ded-32b.yaml")
    groups = cluster["available_node_types"]
    rollout_node, train_node, cpu_node = (groups[n]["resources"] for n in ("gpu-rollout", "gpu-train", "cpu-verify"))

    engine_gpus = config.rollout.num_gpus_per_actor
    assert engine_gpus == config.rollout.engine_kwargs.get("tensor_parallel_size", 1)
    engines_per_node = rollout_node["GPU"] // engine_gpus
    assert engines_per_node >= 1
    assert groups["gpu-rollout"]["max_workers"] * engines_per_node >= config.rollout.concurrency[1]

    # ZeRO-3 on one node: all ranks (1 GPU + num_cpus_per_worker each) on a single training node.
    assert config.train.strategy == "deepspeed" and config.train.zero_stage == 3
    assert config.train.num_workers <= train_node["GPU"]
    assert config.train.num_workers * config.train.num_cpus_per_worker <= train_node["CPU"]

    verify_cpus = config.verify.concurrency[1] * 1  # one CPU per verify actor (Ray Data's default)
    assert verify_cpus <= groups["cpu-verify"]["max_workers"] * cpu_node["CPU"]
