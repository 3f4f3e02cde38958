"""``config.model.init_checkpoint`` takes a training workdir (its best checkpoint) or a model directory."""

import logging

import jax
import numpy as np
import pytest
from tiny_runs import tiny_config

from gcc_jax.models import save_variables
from gcc_jax.runtime import RunCheckpoints, create_model
from gcc_jax.runtime.config import save_config
from gcc_jax.runtime.mesh import create_mesh
from gcc_jax.training import create_learning_rate_fn, create_optimizer, create_train_state
from gcc_jax.training.state import load_init_checkpoint


@pytest.fixture(scope="module")
def trained():
    """A train state of the tiny config (compiled once for the module)."""
    config = tiny_config()
    state, model, _ = _state(config, seed=1)
    return config, state, model


def _state(config, seed):
    config.seed = seed
    model = create_model(config)
    tx = create_optimizer(config.optimizer, create_learning_rate_fn(config.optimizer, 1, total_steps=4))
    return create_train_state(config, model, tx, create_mesh()), model, tx


def test_a_workdir_gives_its_best_checkpoint_and_a_model_directory_its_variables(tmp_path, caplog, trained):
    earlier, best, model = trained
    workdir = tmp_path / "runs" / "earlier"
    save_config(earlier, workdir)
    later = best.replace(params=jax.tree.map(lambda x: x + 1.0, best.params))
    checkpoints = RunCheckpoints(workdir)
    checkpoints.save(later, {"step": 9})  # the newest resumable checkpoint is not the best one
    assert checkpoints.save_best_if_better(4, best.params, {"mae": 3.0})
    checkpoints.wait_until_finished()
    checkpoints.close()

    caplog.set_level(logging.INFO, logger="gcc_jax.training.state")
    params, options = load_init_checkpoint(workdir)
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(best.params))
    assert options == {"width": model.width, "upsample": model.upsample, "output": model.output}
    assert "best checkpoint of" in caplog.text and "(step 4)" in caplog.text

    # Training from the workdir: the new run starts from those parameters, whatever its seed.
    finetune = tiny_config(**{"model.init_checkpoint": str(workdir)})
    started, _, _ = _state(finetune, seed=5)
    jax.tree.map(np.testing.assert_array_equal, started.params, best.params)

    save_variables(tmp_path / "model", {"params": best.params}, options)
    params, again = load_init_checkpoint(tmp_path / "model")
    assert again == options
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(best.params))

    with pytest.raises(ValueError, match="width"):
        _state(tiny_config(**{"model.init_checkpoint": str(workdir), "model.width": 1 / 8}), seed=0)


def test_a_workdir_that_never_validated_gives_its_latest_checkpoint(tmp_path, caplog, trained):
    config, state, _ = trained
    save_config(config, tmp_path)
    checkpoints = RunCheckpoints(tmp_path)
    checkpoints.save(state, {"step": 2})
    checkpoints.wait_until_finished()
    checkpoints.close()
    params, _ = load_init_checkpoint(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(state.params))
    assert "has no best checkpoint" in caplog.text


def test_neither_kind_of_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"neither a training workdir \(no config\.json\) nor a model directory"):
        load_init_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_init_checkpoint(tmp_path / "missing")
    save_config(tiny_config(), tmp_path / "empty_run")
    with pytest.raises(FileNotFoundError, match="no 'latest' checkpoint"):
        load_init_checkpoint(tmp_path / "empty_run")
