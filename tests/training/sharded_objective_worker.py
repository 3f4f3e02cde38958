"""Worker of test_objective_sharding.py: runs with several fake CPU devices (set by the test).

For every loss, compares the per-device (shard_map) objective with the plain one on the same
global batch — value and gradient — and counts all-gathers in the compiled sharded GL step.
Writes a JSON report to argv[1].
"""

import json
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gcc_jax.runtime import create_mesh
from gcc_jax.training import make_loss_fn
from tiny_runs import tiny_config


def main(out_path):
    mesh = create_mesh()
    n = mesh.size
    rng = np.random.default_rng(0)
    batch_size, points, crop = 2 * n, 24, 64
    counts = rng.integers(0, points + 1, batch_size)
    mask = np.arange(points)[None] < counts[:, None]
    batch = {
        "points": rng.uniform(0, crop, (batch_size, points, 2)).astype(np.float32),
        "point_mask": mask,
        "targets": (rng.uniform(0.3, 1.0, (batch_size, points)) * mask).astype(np.float32),
        "st_size": rng.uniform(64, 400, batch_size).astype(np.float32),
    }
    density = rng.uniform(0, 0.1, (batch_size, 8, 8)).astype(np.float32)
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    placed = jax.device_put({"density": density, **batch}, sharding)
    report = {"devices": n}
    for name in ("gl", "bl", "dm_count", "l2"):
        config = tiny_config(**{"loss.name": name})
        results = {}
        for label, loss_fn in (
            ("plain", make_loss_fn(config.loss, crop_size=crop)),
            ("sharded", make_loss_fn(config.loss, crop_size=crop, mesh=mesh)),
        ):
            value_and_grad = jax.jit(jax.value_and_grad(lambda d, b, f=loss_fn: f(d, b)[0]))
            value, grad = value_and_grad(placed["density"], placed)
            results[label] = (float(value), np.asarray(grad))
            if name == "gl" and label == "sharded":
                hlo = value_and_grad.lower(placed["density"], placed).compile().as_text()
                report["gl_sharded_all_gathers"] = hlo.count("all-gather-start") + hlo.count(" all-gather(")
        report[name] = {
            "plain": results["plain"][0],
            "sharded": results["sharded"][0],
            "max_grad_difference": float(np.abs(results["plain"][1] - results["sharded"][1]).max()),
            "max_grad": float(np.abs(results["plain"][1]).max()),
        }
    with open(out_path, "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
