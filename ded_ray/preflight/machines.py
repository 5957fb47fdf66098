"""The machines a run will get, as `ded plan` sees them: node types of a cluster.yaml, the nodes of a live
cluster (`--address`), or this machine.

Ray's node resources say how many GPUs a node has but not how large they are, nor its disk or memory; those
come from the instance type (`INSTANCE_FACTS`, the cloud vendors' published figures) and the node's boot
volume in cluster.yaml. What is not known is None, and the checks say they could not check it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

# instance type -> (GPU memory GiB per GPU, host memory GiB); CPU and GPU counts come from Ray's resources.
INSTANCE_FACTS: dict[str, tuple[float | None, float]] = {
    "p5.48xlarge": (80.0, 2048.0),  # 8x H100 80 GB
    "p5e.48xlarge": (141.0, 2048.0),  # 8x H200
    "p4de.24xlarge": (80.0, 1152.0),  # 8x A100 80 GB
    "p4d.24xlarge": (40.0, 1152.0),  # 8x A100 40 GB
    "g6e.48xlarge": (48.0, 1536.0),  # 8x L40S
    "g5.48xlarge": (24.0, 768.0),  # 8x A10G
    "m7i.4xlarge": (None, 64.0),
    "m7i.8xlarge": (None, 128.0),
    "c7i.8xlarge": (None, 64.0),
    "c7i.16xlarge": (None, 128.0),
}


@dataclass(frozen=True)
class NodeType:
    name: str
    cpus: float
    gpus: float
    max_workers: int  # nodes of this type the cluster may have at once
    gpu_memory_gib: float | None = None
    memory_gib: float | None = None
    disk_gib: float | None = None


@dataclass(frozen=True)
class Machines:
    where: str  # what was planned against, for the printout
    nodes: tuple[NodeType, ...]

    def hosts(self, cpus: float, gpus: float) -> list[NodeType]:
        """Node types one actor asking for `cpus` CPUs and `gpus` GPUs fits on."""
        return [n for n in self.nodes if n.max_workers > 0 and n.cpus >= cpus and n.gpus >= gpus]

    @property
    def total_gpus(self) -> float:
        return sum(n.gpus * n.max_workers for n in self.nodes)

    @property
    def total_cpus(self) -> float:
        return sum(n.cpus * n.max_workers for n in self.nodes)


def from_cluster_yaml(path: str | Path) -> Machines:
    """Node types of a Ray autoscaler config (the `available_node_types` with their `resources`)."""
    data = yaml.safe_load(Path(path).read_text())
    types = data.get("available_node_types") or {}
    if not types:
        raise ValueError(f"{path}: no available_node_types; is it a Ray cluster config (ray up)?")
    head = data.get("head_node_type")
    nodes = []
    for name, spec in types.items():
        resources = spec.get("resources") or {}
        node_config = spec.get("node_config") or {}
        gpu_mem, mem = INSTANCE_FACTS.get(node_config.get("InstanceType"), (None, None))
        count = 1 if name == head else int(spec.get("max_workers", data.get("max_workers", 0)))
        nodes.append(NodeType(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), count,
                              gpu_mem, mem, _boot_volume_gib(node_config)))
    return Machines(f"cluster config {path}", tuple(nodes))


def _boot_volume_gib(node_config: dict) -> float | None:
    for mapping in node_config.get("BlockDeviceMappings") or []:
        size = (mapping.get("Ebs") or {}).get("VolumeSize")
        if size:
            return float(size)
    return None


def from_live_cluster(address: str) -> Machines:
    """The alive nodes of a running cluster (each its own type); joins it briefly with ray.init."""
    import ray

    from ded_ray.errors import UserError

    if ray.is_initialized():
        alive = [n for n in ray.nodes() if n.get("Alive")]
    else:
        try:
            with ray.init(address=address, log_to_driver=False):
                alive = [n for n in ray.nodes() if n.get("Alive")]
        except ConnectionError as exc:
            raise UserError(f"ded plan: no Ray cluster answers at {address!r} ({exc}); plan against a cluster "
                            "config instead: --cluster cluster.yaml") from None
    nodes = []
    for n in alive:
        r = n.get("Resources", {})
        gpu_type = next((k for k in r if k.startswith("accelerator_type:")), None)
        nodes.append(NodeType(f"{n.get('NodeManagerAddress')} {gpu_type or ''}".strip(), float(r.get("CPU", 0)),
                              float(r.get("GPU", 0)), 1, None, float(r.get("memory", 0)) / 2**30 or None))
    return Machines(f"the live cluster at {address} ({len(nodes)} nodes, as they are now)", tuple(nodes))


def this_machine(num_cpus: int | None = None) -> Machines:
    """This machine as the only node (a local run)."""
    import shutil

    gpus, gpu_mem = 0, None
    try:
        import torch

        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            gpu_mem = torch.cuda.get_device_properties(0).total_memory / 2**30
    except ImportError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    disk = shutil.disk_usage(".").free / 2**30
    return Machines("this machine", (NodeType("local", float(num_cpus or os.cpu_count() or 1), float(gpus), 1,
                                              gpu_mem, memory, disk),))
