"""One of two processes (jax.distributed on localhost) that write a resumable and a best
checkpoint of the same step, as a run does when its last step is also its best. Process 1
comes to the barrier that ends each save 3 s late (as a busy host does), so process 0 starts
its second save while the first one's barrier is still open: the race that hung a CI run.

    python checkpoint_barrier_worker.py PORT PROCESS_ID WORKDIR
"""

import sys
import time

import jax
import numpy as np

port, process_id, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)

from gcc_jax.runtime.checkpoints import RunCheckpoints  # noqa: E402 (after initialize)

mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
values = np.arange(8, dtype=np.float32)
params = {"w": jax.make_array_from_callback(values.shape, replicated, lambda index: values[index])}

if process_id == 1:
    # orbax reaches the coordination service through this function (a private module: if it
    # moves, this worker fails loudly rather than testing nothing).
    from orbax.checkpoint._src.multihost import multihost

    class _LateClient:
        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def wait_at_barrier(self, key, *args, **kwargs):
            if "async_write_complete" in key:
                time.sleep(3)
            return self._client.wait_at_barrier(key, *args, **kwargs)

    real_client = multihost.get_jax_distributed_client
    multihost.get_jax_distributed_client = lambda: _LateClient(real_client())

checkpoints = RunCheckpoints(workdir)
checkpoints.save(params, {"step": 4, "epoch": 1, "batch": 0})
assert checkpoints.save_best_if_better(4, params, {"mae": 1.0})
checkpoints.wait_until_finished()
assert checkpoints.best() == (4, {"mae": 1.0})
checkpoints.close()
print(f"process {process_id}: saved")
