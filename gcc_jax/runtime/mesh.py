"""Data parallelism: a 1-D device mesh with a ``data`` axis, and how arrays are placed on it.

This is what "pmap-style data parallelism" means in gcc_jax: one replica of the parameters
and optimizer state on every device (``NamedSharding(mesh, P())``), the global batch split
along its first axis across all devices of all hosts (``NamedSharding(mesh, P("data"))``),
and one ``jax.jit`` step; XLA inserts the gradient all-reduce. It is how JAX (0.10)
implements ``pmap`` itself (on top of ``shard_map``) and what Flax's scaling guide does.

Multi-host: every process runs the same program; each reads its own slice of the global
batch (``gcc_jax.data.make_train_dataset(process_index=..., process_count=...)``) and
:func:`global_batch` assembles the slices into one global array without copying data
between hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "create_mesh",
    "global_batch",
    "initialize_distributed",
    "replicate",
    "replicated_sharding",
]

DATA_AXIS = "data"


def initialize_distributed(
    *, coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Joins this process to a multi-host run (``jax.distributed.initialize``).

    With no arguments JAX detects the cluster (Cloud TPU, SLURM, Open MPI, Kubernetes). For
    CPU devices the cross-process collectives go through gloo (XLA's CPU client has no
    other implementation); GPU and TPU use their own. Call before any other JAX call.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: number of processes.
      process_id: this process's index.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: every device of every host).

    Devices are ordered by process, then by id, so that process ``p``'s slice of a global
    batch lands on process ``p``'s devices (:func:`global_batch`).
    """
    if devices is None:
        devices = jax.devices()
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split across the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Places a pytree of host arrays, identical on every process, replicated on ``mesh``.

    Works on any number of hosts: each process fills its own devices from its own copy.
    """
    sharding = replicated_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of a batch into global arrays split over ``data``.

    Args:
      local_batch: this process's ``[b, ...]`` numpy arrays, ``b = B / process_count``; the
        global batch is the processes' slices concatenated in process order.
      mesh: the data-parallel mesh.

    Returns:
      The same keys as ``[B, ...]`` ``jax.Array``\\ s sharded with :func:`batch_sharding`.

    Raises:
      ValueError: if the global batch does not divide evenly across the devices.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        total = value.shape[0] * jax.process_count()
        if total % mesh.size:
            raise ValueError(
                f"global batch of {total} ({key!r}: {value.shape[0]} per process x "
                f"{jax.process_count()} processes) does not split evenly across {mesh.size} devices; "
                "make config.batch_size a multiple of the device count"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out
