"""The device mesh and the placement of batches on it (data parallelism).

One mesh axis, `data`. Parameters and optimiser state are replicated; every
batch is split along its leading axis. The same code runs on one CPU, N GPUs or
a TPU slice; on several hosts each process contributes its local shard.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (all by default)."""
    devices = jax.devices()
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"asked for a mesh of {num_devices} devices; only {len(devices)} are visible "
                             "(on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N)")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
    """The per-process batch size; raises unless the batch splits evenly."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if global_batch % n_dev:
        raise ValueError(f"batch_size {global_batch} must be divisible by the {n_dev} devices of the mesh")
    return global_batch // n_proc


def put_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
    """Place this process's numeric batch arrays as global arrays sharded on `data`."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}
