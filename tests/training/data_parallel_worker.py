"""Worker of test_data_parallel: the same global batches on 1 device and on all 8 devices.

Run as ``python tests/training/data_parallel_worker.py OUT.json`` with 8 fake CPU devices;
writes per-step losses of both meshes, the distance between their parameters after the steps
beside how far the steps moved them, and how the 8-device arrays were placed.
"""

import json
import sys

import jax
import numpy as np

from gcc_jax.data import make_train_dataset
from gcc_jax.runtime import create_mesh, create_model, dataset_kwargs, global_batch
from gcc_jax.training import (
    create_learning_rate_fn,
    create_optimizer,
    create_train_state,
    make_loss_fn,
    make_train_step,
)
from gcc_jax.training.steps import TRAIN_BATCH_KEYS
from tiny_runs import tiny_config

STEPS = 3


def main(out_path):
    assert jax.device_count() == 8, jax.devices()
    config = tiny_config(**{"batch_size": 8, "dataset.synthetic.num_train": 24})
    epoch = make_train_dataset(
        config.dataset.name,
        crop_size=config.crop_size,
        batch_size=config.batch_size,
        max_points=config.dataset.max_points,
        seed=config.seed,
        **dataset_kwargs(config),
    )
    batches = [{k: b[k] for k in TRAIN_BATCH_KEYS if k in b} for b in epoch][:STEPS]
    model = create_model(config)
    schedule = create_learning_rate_fn(config.optimizer, len(batches), config.num_train_steps)
    results = {}
    for name, mesh in (("one", create_mesh(jax.devices()[:1])), ("eight", create_mesh())):
        state = create_train_state(config, model, create_optimizer(config.optimizer, schedule), mesh)
        initial = jax.tree.map(np.asarray, state.params)
        step = make_train_step(mesh, loss_fn=make_loss_fn(config.loss, crop_size=config.crop_size), learning_rate_fn=schedule)
        losses = []
        for batch in batches:
            placed = global_batch(batch, mesh)
            state, metrics = step(state, placed)
            losses.append(float(metrics["loss"]))
        results[name] = {
            "losses": losses,
            "params": jax.tree.map(np.asarray, state.params),
            "initial": initial,
            "param_devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
            "image_shards": [list(s.data.shape) for s in placed["image"].addressable_shards],
        }
    one, eight = results["one"], results["eight"]

    def norm(tree):
        return float(np.sqrt(sum(np.sum(np.square(x.astype(np.float64))) for x in jax.tree.leaves(tree))))

    with open(out_path, "w") as f:
        json.dump(
            {
                "losses_one": one["losses"],
                "losses_eight": eight["losses"],
                "param_distance": norm(jax.tree.map(np.subtract, one["params"], eight["params"])),
                "param_movement": norm(jax.tree.map(np.subtract, one["params"], one["initial"])),
                "param_devices": eight["param_devices"],
                "image_shards": eight["image_shards"],
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1])
