"""Worker of test_checkpoint_faults: saves a checkpoint at step 2, then begins one at step 4 and
stays in the middle of it (its array writes started, the folder not yet complete), with the
file ``WORKDIR/started`` as the sign for the test to kill it.

    python checkpoint_kill_worker.py WORKDIR
"""

import pathlib
import sys
import time

import jax.numpy as jnp
import orbax.checkpoint as ocp

from gcc_jax.runtime import RunCheckpoints


def _state(value):
    return {
        "step": jnp.asarray(int(value), jnp.int32),
        "params": {"w": jnp.full((16, 8), value, jnp.float32), "b": jnp.full((8,), value, jnp.float32)},
    }


def main(workdir: pathlib.Path) -> None:
    checkpoints = RunCheckpoints(workdir, max_to_keep=5)
    checkpoints.save(_state(2), {"step": 2, "epoch": 0, "batch": 2})
    checkpoints.wait_until_finished()
    start_writing = ocp.PyTreeCheckpointHandler.async_save

    async def write_and_hang(self, *args, **kwargs):
        futures = await start_writing(self, *args, **kwargs)
        (workdir / "started").touch()
        time.sleep(3600)  # killed here, in the middle of the save
        return futures

    ocp.PyTreeCheckpointHandler.async_save = write_and_hang
    checkpoints.save(_state(4), {"step": 4, "epoch": 0, "batch": 4})
    time.sleep(3600)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
