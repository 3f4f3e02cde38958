"""config.loss selects the loss, binds its batch inputs and its own hyper-parameter block."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from gcc_jax import losses
from gcc_jax.runtime import create_mesh, global_batch
from gcc_jax.training import make_loss_fn
from tiny_runs import tiny_config
from tolerances import bl_rtol, dm_rtol, gl_rtol


def _batch(seed=0, batch=2, points=5, crop=64):
    rng = np.random.default_rng(seed)
    mask = np.arange(points)[None] < np.array([[3], [0]])[:batch]
    return {
        "points": jnp.asarray(rng.uniform(0, crop, (batch, points, 2)), jnp.float32),
        "point_mask": jnp.asarray(mask),
        "targets": jnp.asarray(rng.uniform(0.3, 1.0, (batch, points)) * mask, jnp.float32),
        "st_size": jnp.asarray([300.0, 90.0][:batch], jnp.float32),
    }


@pytest.mark.parametrize("name", ["gl", "bl", "dm_count", "l2"])
def test_each_loss_is_the_library_loss(name):
    config = tiny_config(**{"loss.name": name})
    block = config.loss[name]
    # A non-default hyper-parameter must reach the loss.
    if name == "gl":
        block.tau = 0.3
    elif name == "bl":
        block.sigma = 5.0
    elif name == "dm_count":
        block.wtv = 0.1
    else:
        block.sigma = 4.0
    density = jnp.asarray(np.random.default_rng(1).uniform(0, 0.1, (2, 8, 8)), jnp.float32)
    batch = _batch()
    loss, terms = make_loss_fn(config.loss, crop_size=64)(density, batch)
    points, mask = batch["points"], batch["point_mask"]
    if name == "gl":
        expected, _ = losses.generalized_loss(density, points, mask, crop_size=64, **block.to_dict())
    elif name == "bl":
        expected, _ = losses.bayesian_loss(
            density, points, mask, st_size=batch["st_size"], targets=batch["targets"], **block.to_dict()
        )
    elif name == "dm_count":
        expected, _ = losses.dm_count_loss(density, points, mask, **block.to_dict())
    else:
        expected, _ = losses.l2_loss(density, points, mask, **block.to_dict())
    # The same loss, maybe compiled into another program: its round-off bound for 64 cells and
    # 5 point slots (tests/tolerances.py); BL's and DM-Count's parts cancel, so absolutely at
    # their size (heads + mass ≤ 3 + 6.4).
    rtol = {"gl": gl_rtol(cells=64, points=5), "bl": bl_rtol(heads=5, cells=64),
            "dm_count": dm_rtol(cells=64, heads=5), "l2": bl_rtol(heads=5, cells=64)}[name]
    np.testing.assert_allclose(loss, expected, rtol=rtol, atol=rtol * 10)
    assert all(v.shape == (2,) for v in terms.values())


def test_unknown_loss_fails():
    config = ml_collections.ConfigDict({"name": "mse"})
    with pytest.raises(ValueError, match="config.loss.name"):
        make_loss_fn(config, crop_size=64)


def test_global_batch_is_split_on_the_data_axis():
    mesh = create_mesh()
    placed = global_batch({"image": np.zeros((2 * mesh.size, 4, 4, 3), np.float32)}, mesh)
    assert placed["image"].shape == (2 * mesh.size, 4, 4, 3)
    assert placed["image"].sharding.spec == PartitionSpec("data")
