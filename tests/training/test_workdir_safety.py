"""A run that cannot start leaves the workdir as it was; no checkpoint ever holds NaN / inf."""

import jax
import numpy as np
import pytest

from gcc_jax.runtime import RunCheckpoints, create_mesh, create_model, replicated_sharding, restore_params
from gcc_jax.runtime import config as config_lib
from gcc_jax.training import (
    NonFiniteLossError,
    create_learning_rate_fn,
    create_optimizer,
    create_train_state,
    train_and_evaluate,
)
from tiny_runs import tiny_config


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _workdir_of(config, workdir):
    """A workdir as a run of ``config`` leaves it: its config and a checkpoint at step 2."""
    optimizer = create_optimizer(config.optimizer, create_learning_rate_fn(config.optimizer, 2, 4))
    state = create_train_state(config, create_model(config), optimizer, create_mesh(jax.devices()[:1]))
    config_lib.save_config(config, workdir)
    checkpoints = RunCheckpoints(workdir)
    checkpoints.save(state, {"step": 2, "epoch": 1, "batch": 0})
    checkpoints.close()


def test_a_checkpoint_of_another_model_is_refused_before_anything_is_written(tmp_path):
    _workdir_of(tiny_config(), tmp_path)
    before = _files(tmp_path)
    wider = tiny_config(**{"model.width": 1 / 8})
    with pytest.raises(ValueError) as raised:
        train_and_evaluate(wider, tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert "holds a checkpoint (step 2) of a model with other parameter shapes" in message
    assert "features/conv1_1/bias: saved (4,), now (8,)" in message
    assert "model.width: 0.0625 -> 0.125" in message
    assert _files(tmp_path) == before  # config.json, checkpoints: untouched


def test_a_data_set_that_cannot_be_built_leaves_no_workdir(tmp_path):
    (tmp_path / "raw").mkdir()
    config = tiny_config(
        **{"dataset.name": "shanghaitech/part_b", "dataset.manual_dir": str(tmp_path / "raw"),
           "dataset.data_dir": str(tmp_path / "tfds"), "dataset.train_split": "train",
           "dataset.eval_split": "test"}
    )
    with pytest.raises(ValueError, match="does not exist or is empty"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_no_checkpoint_holds_nan_when_saves_and_metric_checks_are_on_different_steps(tmp_path):
    # An absurd learning rate: finite but huge parameters after step 1, a NaN loss at step 2.
    # Metrics come to the host only every 4 steps, checkpoints are written every step.
    config = tiny_config(
        num_train_steps=4, log_every_steps=4, checkpoint_every_steps=1,
        **{"optimizer.learning_rate": 1e30, "dataset.synthetic.num_train": 16},
    )
    with pytest.raises(NonFiniteLossError, match=r"at step 2\b.*checkpoint \(step 1\) predates it and holds finite values"):
        train_and_evaluate(config, tmp_path)
    checkpoints = RunCheckpoints(tmp_path)
    steps = checkpoints._latest.all_steps()
    checkpoints.close()
    assert list(steps) == [1]
    model = create_model(config)
    sharding = replicated_sharding(create_mesh(jax.devices()[:1]))
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
    params, step = restore_params(tmp_path, abstract, which="latest")
    assert step == 1 and all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))
