"""Evaluate a checkpoint on a split and print / write its counting metrics.

    # a training run's best checkpoint, config read from the workdir
    python -m gcc_jax.evaluate --workdir /tmp/gcc_synthetic [--checkpoint best|latest|STEP] [--split test]
    # a model directory (python -m gcc_jax.convert_weights, e.g. official GL weights)
    python -m gcc_jax.evaluate --config configs/sha.py --checkpoint MODEL_DIR [--config.dataset.data_dir=...]

Prints one JSON object (``mae``, ``rmse`` — the literature's "MSE" —, ``nae``, ``game0..3``,
``trivial_mae`` / ``trivial_rmse`` of the mean-training-count predictor, ``num_images``,
``checkpoint``, ``step``, ``split``) and writes it to ``--output`` (default
``WORKDIR/eval_<split>_<checkpoint>.json`` when a workdir is given). Runs on this process's
devices.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections

from gcc_jax.data import make_eval_dataset
from gcc_jax.models import VGG19Density, load_variables
from gcc_jax.training import config as config_lib
from gcc_jax.training.checkpoints import restore_params
from gcc_jax.training.evaluation import evaluate, local_eval_mesh
from gcc_jax.training.loop import dataset_kwargs, mean_training_count
from gcc_jax.training.mesh import replicate, replicated_sharding
from gcc_jax.training.state import create_model
from gcc_jax.training.steps import make_predict_fn

__all__ = ["evaluate_checkpoint", "main"]

_RUN_CHECKPOINTS = ("best", "latest")


def _is_run_checkpoint(checkpoint: str) -> bool:
    return checkpoint in _RUN_CHECKPOINTS or checkpoint.isdigit()


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    *,
    workdir: str | os.PathLike | None = None,
    checkpoint: str = "best",
    split: str | None = None,
) -> dict:
    """Counting metrics of a checkpoint on a split.

    Args:
      config: the run's config (data set, model width, loss → head, eval batch size).
      workdir: the training run's directory (for ``best`` / ``latest`` / a step).
      checkpoint: ``"best"``, ``"latest"``, a step number (resumable checkpoints of
        ``workdir``), or the path of a model directory written by ``save_variables`` /
        ``convert_weights`` (its own ``model.json`` decides width and head).
      split: split to evaluate (default ``config.dataset.eval_split``).

    Returns:
      The metrics of :func:`gcc_jax.training.evaluate` plus ``checkpoint``, ``step`` (or
      ``None`` for a model directory) and ``split``.

    Raises:
      ValueError: a run checkpoint was asked for without ``workdir``.
      FileNotFoundError: no such checkpoint.
    """
    split = split or config.dataset.eval_split
    mesh = local_eval_mesh(config.eval_batch_size)
    if _is_run_checkpoint(checkpoint):
        if workdir is None:
            raise ValueError(f"--checkpoint={checkpoint} needs --workdir (or give a model directory path)")
        model = create_model(config)
        dummy = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)
        shapes = jax.eval_shape(model.init, jax.random.key(0), dummy)["params"]
        sharding = replicated_sharding(mesh)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
        params, step = restore_params(workdir, abstract, which=checkpoint)
        variables = {"params": params}
    else:
        loaded, options = load_variables(checkpoint)
        model = VGG19Density(**options, dtype=jnp.dtype(config.model.dtype))
        variables, step = replicate(loaded, mesh), None
    batches = make_eval_dataset(
        config.dataset.name,
        split=split,
        batch_size=config.eval_batch_size,
        pad_multiple=config.dataset.eval_pad_multiple,
        **dataset_kwargs(config),
    )
    trivial = mean_training_count(config, workdir)
    result = evaluate(make_predict_fn(model.apply, mesh), variables, batches, mesh, trivial_count=trivial)
    return {**result.metrics, "checkpoint": str(checkpoint), "step": step, "split": split}


def main(argv) -> None:
    from absl import flags

    flags_ = flags.FLAGS
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    workdir = flags_.workdir
    if flags_.config is not None:
        config = flags_.config
    elif workdir is not None:
        config = config_lib.load_workdir_config(workdir)
    else:
        raise ValueError("give --workdir (a training run) or --config (with --checkpoint MODEL_DIR)")
    metrics = evaluate_checkpoint(config, workdir=workdir, checkpoint=flags_.checkpoint, split=flags_.split)
    line = json.dumps(metrics)
    print(line)
    output = flags_.output
    if output is None and workdir is not None:
        name = flags_.checkpoint if _is_run_checkpoint(flags_.checkpoint) else pathlib.Path(flags_.checkpoint).name
        output = pathlib.Path(workdir) / f"eval_{metrics['split'].replace('/', '_')}_{name}.json"
    if output is not None:
        pathlib.Path(output).write_text(line + "\n")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (default: the workdir's config.json).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Training run directory.")
    flags.DEFINE_string("checkpoint", "best", "best | latest | STEP (of --workdir) | path of a model directory.")
    flags.DEFINE_string("split", None, "Split to evaluate (default: config.dataset.eval_split).")
    flags.DEFINE_string("output", None, "JSON file for the metrics (default: WORKDIR/eval_<split>_<checkpoint>.json).")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
