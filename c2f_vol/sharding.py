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

from c2f_vol.errors import UserError
from c2f_vol.hostcpu import tune_cpu_backend

DATA_AXIS = "data"

def use_cpu_devices(batch_size: int, requested: int = 0) -> int:
    """How many JAX devices the host CPU is split into for the data-parallel mesh.

    `requested` = 0 (the default) keeps one CPU device: its step runs XLA's
    independent ops concurrently and its convolutions and matmuls multi-threaded,
    over every core. That measured faster than one device per core, which pays
    for a cross-device reduction of every BatchNorm's statistics and every
    gradient, and which a core busy with other work stalls at each of them
    (2-core AVX-512 machine, synthetic_cpu step, batch 16: 222-242 against
    187-200 images/s unloaded, 143-148 against 137-142 with one core held busy;
    README, "Measured figures"). `requested` = N > 1 splits the CPU into N
    devices (N must divide `batch_size`). Only the CPU platform is affected: on a
    GPU/TPU host the accelerators remain the default devices. Must run before
    JAX initialises its backends (before the first jax.devices() or computation).

    Also sets XLA's CPU kernels for this class of CPU (`hostcpu.tune_cpu_backend`).

    Returns the number of CPU devices configured.
    """
    import jax

    tune_cpu_backend()
    if requested < 0:
        raise ValueError(f"the CPU device count must be >= 0 (0 = the default, one device); got {requested}")
    requested = int(requested) or 1
    if batch_size % requested:
        raise UserError(f"--cpu_devices={requested} does not divide the batch size {batch_size}: pick a divisor "
                        "of the batch, or 0 (one device over all cores)")
    try:
        jax.config.update("jax_num_cpu_devices", requested)
    except RuntimeError as e:  # backends already initialised
        raise RuntimeError(f"use_cpu_devices({requested}) must be called before JAX initialises its backends "
                           f"(before any jax.devices() call or computation): {e}") from e
    return requested


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


def host_local(tree):
    """This process's own copy of a pytree of replicated arrays: each leaf on the first local device.

    For work every process does by itself on the whole (replicated) state, e.g. evaluation during
    multi-process training: a global array spanning other processes' devices would make every call on
    it a multi-process computation that all processes must enter in step. Leaves that are not
    jax.Arrays pass through; a leaf sharded (not replicated) across devices is an error.
    """

    def local(x):
        if not isinstance(x, jax.Array):
            return x
        if not x.is_fully_replicated:
            raise ValueError(f"host_local needs replicated arrays; got one of shape {x.shape} sharded as {x.sharding}")
        return x.addressable_data(0)

    return jax.tree.map(local, tree)
