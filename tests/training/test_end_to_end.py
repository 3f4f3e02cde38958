"""A whole tiny run in-process: train, evaluate, checkpoint, write metrics, pictures, stop on NaN."""

import json

import numpy as np
import pytest

from gcc_jax.inference import evaluate_checkpoint
from gcc_jax.runtime import RunCheckpoints, load_workdir_config
from gcc_jax.runtime.config import config_for_command
from gcc_jax.training import NonFiniteLossError, read_metrics, train_and_evaluate
from tiny_runs import tiny_config
from tolerances import vgg_rtol


def test_tiny_run_trains_evaluates_and_checkpoints(tmp_path):
    # 8 training images, batch 4: two steps per epoch; evaluation every 3 epochs.
    config = tiny_config(
        num_train_steps=-1, num_epochs=6, eval_every_epochs=3, checkpoint_every_steps=6,
        **{"dataset.synthetic.num_train": 8},
    )
    final = train_and_evaluate(config, tmp_path)

    train = read_metrics(tmp_path, "train")
    val = read_metrics(tmp_path, "val")
    assert [r["step"] for r in train] == list(range(1, 13))
    assert [r["step"] for r in val] == [0, 6, 12]
    losses = np.array([r["loss"] for r in train])
    assert np.isfinite(losses).all()
    assert losses[-3:].mean() < 0.8 * losses[:3].mean(), losses
    for name in ("term/ot", "term/point", "term/pixel", "grad_norm", "learning_rate", "count_error"):
        assert name in train[0]
    for name in ("mae", "rmse", "nae", "trivial_mae", "num_images"):
        assert name in val[0]
    assert val[-1]["mae"] == final["mae"]  # the same evaluation, written and returned
    assert val[0]["num_images"] == 2

    checkpoints = RunCheckpoints(tmp_path)
    assert checkpoints.latest_step() == 12
    best_step, best = checkpoints.best()
    assert best["mae"] == min(r["mae"] for r in val)
    assert best_step == min(val, key=lambda r: r["mae"])["step"]
    checkpoints.close()

    assert load_workdir_config(tmp_path).to_dict() == json.loads(json.dumps(config.to_dict()))
    assert config_for_command(None, tmp_path).to_dict() == load_workdir_config(tmp_path).to_dict()
    assert config_for_command(config, tmp_path).to_dict() == config.to_dict()  # --config wins
    with pytest.raises(ValueError, match="give --workdir"):
        config_for_command(None, None)
    assert (tmp_path / "pictures" / "step_00000000.png").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))

    # The evaluation entry point rebuilds everything from the workdir.
    latest = evaluate_checkpoint(load_workdir_config(tmp_path), workdir=tmp_path, checkpoint="latest")
    # Another program (the evaluation command's) on the same images: each of the 8 × 8 cells of
    # a map moves by the network's round-off (tolerances.vgg_rtol) times the largest cell
    # (below one person), so a count and the mean absolute error by at most 64 times that.
    assert latest["step"] == 12
    assert latest["mae"] == pytest.approx(final["mae"], rel=0, abs=64 * vgg_rtol(config.model.width))


def test_nan_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    # An absurd learning rate blows the weights up after the first update.
    config = tiny_config(
        num_train_steps=4, checkpoint_every_steps=1,
        **{"optimizer.learning_rate": 1e30, "dataset.synthetic.num_train": 16},
    )
    with pytest.raises(NonFiniteLossError, match=r"at step 2\b.*checkpoint \(step 1\)"):
        train_and_evaluate(config, tmp_path)
    checkpoints = RunCheckpoints(tmp_path)
    assert checkpoints.latest_step() == 1
    checkpoints.close()
