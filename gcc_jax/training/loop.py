"""The training program: :func:`train_and_evaluate` trains, evaluates and checkpoints a run.

Flow of a run in ``workdir`` (every process of a multi-host run executes the same flow):

1. Save the resolved config (``config.json``); build the mesh, model, optimizer and the
   replicated train state; restore the newest checkpoint if the workdir has one.
2. Fresh runs evaluate the untrained model at step 0, so every learning curve starts there.
3. Train: each epoch's input pipeline is rebuilt from ``(seed, epoch)`` and, when resuming
   mid-epoch, skips the batches already consumed, so a resumed run sees exactly the batches
   the uninterrupted run would have seen.
4. Every ``log_every_steps`` the step metrics come to the host (one transfer for the whole
   interval), are checked for NaN / inf and averaged into ``metrics.jsonl`` and TensorBoard.
5. Every ``eval_every_epochs`` epochs (and at the end): validation MAE / RMSE / NAE / GAME
   beside the trivial predictor's MAE, localization precision / recall / F1
   (``config.localization``), density-map pictures, and the best checkpoint.
6. Every ``checkpoint_every_steps`` (and at the end): a resumable checkpoint, written only
   after the metrics up to that step were found finite.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time

import jax
import ml_collections
import numpy as np

from gcc_jax.data import make_eval_dataset, make_train_dataset, train_steps_per_epoch
from gcc_jax.data.sources import open_source
from gcc_jax.training import config as config_lib
from gcc_jax.training.checkpoints import RunCheckpoints
from gcc_jax.training.evaluation import LocalizationOptions, evaluate, local_eval_mesh, to_local_mesh
from gcc_jax.training.mesh import create_mesh, global_batch
from gcc_jax.training.objective import make_loss_fn
from gcc_jax.training.pictures import density_picture, save_picture
from gcc_jax.training.state import create_learning_rate_fn, create_model, create_optimizer, create_train_state
from gcc_jax.training.steps import TRAIN_BATCH_KEYS, make_predict_fn, make_train_step
from gcc_jax.training.writers import MetricWriter, ProgressBar

__all__ = ["NonFiniteLossError", "dataset_kwargs", "mean_training_count", "pipeline_kwargs", "train_and_evaluate"]

_log = logging.getLogger(__name__)

_TRAIN_COUNTS_FILE = "train_counts.json"
_PICTURES_DIR = "pictures"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


def dataset_kwargs(config: ml_collections.ConfigDict) -> dict:
    """Arguments shared by every pipeline of ``config.dataset`` (location, synthetic options)."""
    kwargs = {"data_dir": config.dataset.data_dir, "manual_dir": config.dataset.manual_dir}
    if config.dataset.name == "synthetic_crowd":
        kwargs["synthetic"] = config.dataset.synthetic.to_dict()
    return kwargs


def pipeline_kwargs(config: ml_collections.ConfigDict) -> dict:
    """:func:`dataset_kwargs` and the input backend (``config.dataset.loader``; ``"tf.data"``
    for configs saved before it existed): the arguments every input pipeline of a run shares."""
    return {**dataset_kwargs(config), "loader": config.dataset.get("loader", "tf.data")}


def mean_training_count(config: ml_collections.ConfigDict, workdir: str | os.PathLike | None = None) -> float:
    """Mean head count per image of the training split: the trivial predictor's constant.

    Cached in ``workdir/train_counts.json`` (reading a real split's annotations takes a pass
    over its records).
    """
    cache = pathlib.Path(workdir) / _TRAIN_COUNTS_FILE if workdir is not None else None
    key = {"dataset": config.dataset.name, "split": config.dataset.train_split}
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return float(cached["mean_count"])
    source = open_source(config.dataset.name, split=config.dataset.train_split, **dataset_kwargs(config))
    counts = np.asarray([source.read(i)["count"] for i in range(len(source))], np.float64)
    counts = counts[np.isfinite(counts)]
    if counts.size == 0:
        raise ValueError(f"training split {config.dataset.train_split!r} of {config.dataset.name} has no annotated image")
    mean = float(counts.mean())
    if cache is not None and jax.process_index() == 0:
        cache.write_text(json.dumps({**key, "num_images": int(counts.size), "mean_count": mean}) + "\n")
    return mean


def _changed_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changed


def _save_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    path = workdir / config_lib.CONFIG_FILE
    if path.is_file():
        changed = _changed_fields(json.loads(path.read_text()), json.loads(json.dumps(config.to_dict())))
        if changed:
            _log.warning("workdir %s was run with a different config; now: %s", workdir, "; ".join(changed))
    config_lib.save_config(config, workdir)


def _format(metrics: dict, names: tuple[str, ...]) -> str:
    return " ".join(f"{name} {metrics[name]:.4g}" for name in names if name in metrics)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, float]:
    """Trains the model of ``config``, evaluating and checkpointing into ``workdir``.

    Resumes from the newest checkpoint in ``workdir`` if there is one (same batches, same
    updates as an uninterrupted run).

    Args:
      config: a config like ``configs/default.py``'s.
      workdir: the run's directory (created).

    Returns:
      The metrics of the last evaluation (``mae``, ``rmse``, ``nae``, ``trivial_mae``, ...).

    Raises:
      ValueError: a config the program cannot run (named field), or a batch that does not
        split across the devices.
      NonFiniteLossError: the loss became NaN / inf (the message names the step; no
        checkpoint is written after it).
    """
    config_lib.check_config(config)
    workdir = pathlib.Path(workdir).absolute()
    is_chief = jax.process_index() == 0
    mesh = create_mesh()
    if config.batch_size % mesh.size:
        raise ValueError(
            f"config.batch_size={config.batch_size} must be a multiple of the {mesh.size} devices "
            f"({jax.process_count()} process(es)): every device takes an equal slice of the batch"
        )
    if is_chief:
        workdir.mkdir(parents=True, exist_ok=True)
        _save_config(config, workdir)

    data_kwargs = dataset_kwargs(config)
    steps_per_epoch = train_steps_per_epoch(
        config.dataset.name, split=config.dataset.train_split, batch_size=config.batch_size, **data_kwargs
    )
    if steps_per_epoch < 1:
        raise ValueError(f"config.batch_size={config.batch_size} exceeds the training split's size")
    total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch

    model = create_model(config)
    learning_rate_fn = create_learning_rate_fn(config.optimizer, steps_per_epoch, total_steps)
    state = create_train_state(config, model, create_optimizer(config.optimizer, learning_rate_fn), mesh)
    checkpoints = RunCheckpoints(workdir, max_to_keep=config.max_checkpoints_to_keep)
    writer = MetricWriter(workdir, enabled=is_chief)
    position = {"step": 0, "epoch": 0, "batch": 0}
    restored = checkpoints.restore(state)
    if restored is not None:
        state, position = restored
        writer.truncate_after(position["step"])
        _log.info("resuming from the checkpoint at step %d (epoch %d, batch %d)", *(position[k] for k in ("step", "epoch", "batch")))

    train_step = make_train_step(mesh, loss_fn=make_loss_fn(config.loss, crop_size=config.crop_size, mesh=mesh), learning_rate_fn=learning_rate_fn)
    eval_mesh = local_eval_mesh(config.eval_batch_size)
    predict_fn = make_predict_fn(model.apply, eval_mesh)
    trivial_count = mean_training_count(config, workdir)
    localization = LocalizationOptions.from_config(config)
    progress = ProgressBar(total_steps, position["step"], enabled=is_chief and config.progress_bar, verbose=is_chief)
    progress.write(
        f"{jax.process_count()} process(es), {mesh.size} device(s) ({jax.devices()[0].platform}); "
        f"{steps_per_epoch} steps per epoch, {total_steps} steps; workdir {workdir}"
    )

    def run_evaluation(step: int, epoch: int) -> dict[str, float]:
        batches = make_eval_dataset(
            config.dataset.name,
            split=config.dataset.eval_split,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            batch_size=config.eval_batch_size,
            pad_multiple=config.dataset.eval_pad_multiple,
            **pipeline_kwargs(config),
        )
        variables = to_local_mesh({"params": state.params}, eval_mesh)
        result = evaluate(
            predict_fn,
            variables,
            batches,
            eval_mesh,
            trivial_count=trivial_count,
            num_examples=config.num_pictures,
            localization=localization,
        )
        metrics = {**result.metrics, "epoch": epoch}
        writer.write_scalars(step, "val", metrics)
        if result.examples and is_chief:
            picture = density_picture(result.examples, title=f"step {step}, epoch {epoch}")
            save_picture(picture, workdir / _PICTURES_DIR / f"step_{step:08d}.png")
            writer.write_images(step, "val", "density_maps", picture[None])
        checkpoints.save_best_if_better(step, state.params, result.metrics)
        return metrics

    eval_metrics = {}
    if position["step"] == 0:
        eval_metrics = run_evaluation(0, 0)
        progress.write(
            f"step 0 (untrained): val {_format(eval_metrics, ('mae', 'rmse', 'nae'))} | "
            f"trivial predictor ({trivial_count:.1f} per image) mae {eval_metrics['trivial_mae']:.4g}"
        )

    pending = []  # per-step device metrics since the last flush
    epoch_sums, epoch_steps = {}, 0
    interval_start = time.perf_counter()

    def flush(step: int) -> None:
        """Brings the pending step metrics to the host, checks them, writes their mean."""
        nonlocal pending, epoch_steps, interval_start
        if not pending:
            return
        host = jax.device_get(pending)
        first = step - len(host) + 1
        for offset, metrics in enumerate(host):
            if not np.isfinite(metrics["loss"]):
                checkpoints.wait_until_finished()
                latest = checkpoints.latest_step()
                raise NonFiniteLossError(
                    f"training loss is {float(metrics['loss'])} at step {first + offset}; training stopped. "
                    + (f"The last checkpoint (step {latest}) predates it and is intact." if latest is not None
                       else "No checkpoint was written.")
                )
        elapsed = time.perf_counter() - interval_start
        means = {name: float(np.mean([m[name] for m in host])) for name in host[0]}
        for name, value in means.items():
            epoch_sums[name] = epoch_sums.get(name, 0.0) + value * len(host)
        epoch_steps += len(host)
        writer.write_scalars(step, "train", {**means, "steps_per_second": len(host) / elapsed})
        progress.set_postfix(loss=f"{means['loss']:.4g}", lr=f"{means['learning_rate']:.2g}")
        pending, interval_start = [], time.perf_counter()

    step, epoch, batch_index = position["step"], position["epoch"], position["batch"]
    batches = None
    while step < total_steps:
        if batches is None:
            batches = iter(
                make_train_dataset(
                    config.dataset.name,
                    split=config.dataset.train_split,
                    crop_size=config.crop_size,
                    batch_size=config.batch_size,
                    max_points=config.dataset.max_points,
                    seed=config.seed,
                    epoch=epoch,
                    process_index=jax.process_index(),
                    process_count=jax.process_count(),
                    min_size_policy=config.dataset.min_size_policy,
                    skip_batches=batch_index,
                    image_cache_bytes=int(config.dataset.get("image_cache_mib", 0) * 2**20),
                    **pipeline_kwargs(config),
                )
            )
        batch = next(batches)
        state, metrics = train_step(state, global_batch({k: batch[k] for k in TRAIN_BATCH_KEYS}, mesh))
        pending.append(metrics)
        step += 1
        batch_index += 1
        progress.update()
        epoch_done = batch_index == steps_per_epoch
        if epoch_done:
            epoch, batch_index, batches = epoch + 1, 0, None
        last = step == total_steps
        if step % config.log_every_steps == 0 or epoch_done or last:
            flush(step)
        if (epoch_done and epoch % config.eval_every_epochs == 0) or last:
            eval_metrics = run_evaluation(step, epoch)
        if epoch_done or last:
            train_means = {name: total / max(epoch_steps, 1) for name, total in epoch_sums.items()}
            line = f"epoch {epoch} step {step}/{total_steps}: train {_format(train_means, ('loss', 'count_error'))}"
            if eval_metrics.get("epoch") == epoch:  # evaluated at the end of this epoch
                line += f" | val {_format(eval_metrics, ('mae', 'rmse', 'nae'))} (trivial mae {eval_metrics['trivial_mae']:.4g})"
            progress.write(line)
            epoch_sums, epoch_steps = {}, 0
        if step % config.checkpoint_every_steps == 0 or last:
            checkpoints.save(state, {"step": step, "epoch": epoch, "batch": batch_index})

    checkpoints.wait_until_finished()
    best = checkpoints.best()
    checkpoints.close()
    writer.close()
    progress.close()
    if best is not None:
        progress.write(f"best val mae {best[1]['mae']:.4g} at step {best[0]}; workdir {workdir}")
    return eval_metrics
