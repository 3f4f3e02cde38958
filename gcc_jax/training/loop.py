"""The training program: :func:`train_and_evaluate` trains, evaluates and checkpoints a run.

Flow of a run in ``workdir`` (every process of a multi-host run executes the same flow):

1. Check that the run can start before writing anything: the config fits the devices, the
   data set opens (a lazy build happens here), and a checkpoint already in the workdir fits
   the model's parameter shapes. Then save the resolved config (``config.json``), and restore
   the newest checkpoint if the workdir has one.
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
   after the losses up to that step and every value of the train state were found finite. It
   holds the step metrics not yet averaged into ``metrics.jsonl``, so that a resumed run
   writes the same averages as an uninterrupted one.
7. On SIGTERM / SIGINT (:mod:`gcc_jax.training.preemption`; on several hosts at the step JAX's
   preemption service agrees on): the step finishes, a checkpoint of it is saved, the metrics
   up to it are written, and :class:`TrainingStopped` ends the run.

A resumed (or restarted) run first removes from ``metrics.jsonl`` and the event files what
the lost run wrote after the restored checkpoint, so a workdir's measurements describe one run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcc_jax.data import make_train_dataset, train_steps_per_epoch
from gcc_jax.localization_scoring import LocalizationOptions
from gcc_jax.runtime import config as config_lib
from gcc_jax.runtime.checkpoints import CheckpointError, RunCheckpoints, latest_param_shapes, param_shape_differences
from gcc_jax.runtime.config import dataset_kwargs, pipeline_kwargs
from gcc_jax.runtime.evaluation import (
    evaluate,
    local_eval_mesh,
    make_eval_batches,
    mean_training_count,
    to_local_mesh,
)
from gcc_jax.runtime.mesh import create_mesh, global_batch
from gcc_jax.runtime.model import create_model, make_predict_fn
from gcc_jax.runtime.recipes import resolve_recipe
from gcc_jax.training.objective import make_loss_fn
from gcc_jax.training.pictures import density_picture, save_picture
from gcc_jax.training.preemption import StopRequests, TrainingStopped
from gcc_jax.training.state import (
    TrainState,
    create_learning_rate_fn,
    create_optimizer,
    create_train_state,
)
from gcc_jax.training.steps import TRAIN_BATCH_KEYS, make_train_step
from gcc_jax.training.writers import MetricWriter, ProgressBar

__all__ = ["NonFiniteLossError", "TrainingStopped", "train_and_evaluate"]

_log = logging.getLogger(__name__)

_PICTURES_DIR = "pictures"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


@dataclasses.dataclass
class _Position:
    """Where a run stands: optimizer steps done, the epoch, and batches done in that epoch."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


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
        saved = config_lib.upgrade_saved_config(json.loads(path.read_text()))
        changed = _changed_fields(saved, json.loads(json.dumps(config.to_dict())))
        if changed:
            _log.warning("workdir %s was run with a different config; now: %s", workdir, "; ".join(changed))
    config_lib.save_config(config, workdir)


def _format(metrics: dict, names: tuple[str, ...]) -> str:
    return " ".join(f"{name} {metrics[name]:.4g}" for name in names if name in metrics)


def _check_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Checks ``config`` and that its batch splits over the devices."""
    config_lib.check_config(config)
    if config.batch_size % num_devices:
        raise ValueError(
            f"config.batch_size={config.batch_size} must be a multiple of the {num_devices} devices "
            f"({jax.process_count()} process(es)): every device takes an equal slice of the batch"
        )


def _check_resumable(config: ml_collections.ConfigDict, workdir: pathlib.Path, params) -> None:
    """Refuses a workdir whose newest checkpoint does not fit ``params``, in one message.

    Checked on the checkpoint's metadata before anything is written, so the workdir (its
    ``config.json``, its checkpoints) stays as it was.

    Raises:
      ValueError: naming the config fields that changed and the first parameters whose shapes
        differ.
    """
    found = latest_param_shapes(workdir)
    if found is None:
        return
    step, saved = found
    differences = param_shape_differences(saved, params)
    if not differences:
        return
    path = workdir / config_lib.CONFIG_FILE
    changed = []
    if path.is_file():
        saved_config = config_lib.upgrade_saved_config(json.loads(path.read_text()))
        changed = _changed_fields(saved_config, json.loads(json.dumps(config.to_dict())))
    shown = "; ".join(differences[:2]) + (f"; and {len(differences) - 2} more" if len(differences) > 2 else "")
    raise ValueError(
        f"workdir {workdir} holds a checkpoint (step {step}) of a model with other parameter shapes "
        f"({shown}); "
        + (f"the config it was trained with differs in: {'; '.join(changed)}. " if changed else "")
        + "Resume with that config, or give another --workdir for a new run."
    )


@jax.jit
def _all_finite(tree) -> jax.Array:
    """Whether every floating-point value of ``tree`` is finite (one device reduction)."""
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def _run_length(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """``(steps per epoch, total steps)`` of the run."""
    steps_per_epoch = train_steps_per_epoch(
        config.dataset.name, split=config.dataset.train_split, batch_size=config.batch_size, **dataset_kwargs(config)
    )
    if steps_per_epoch < 1:
        raise ValueError(f"config.batch_size={config.batch_size} exceeds the training split's size")
    total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
    return steps_per_epoch, total_steps


def _train_batches(config: ml_collections.ConfigDict, position: _Position) -> Iterator[dict]:
    """This process's batches of ``position.epoch``, from batch ``position.batch`` on."""
    return iter(
        make_train_dataset(
            config.dataset.name,
            split=config.dataset.train_split,
            crop_size=config.crop_size,
            batch_size=config.batch_size,
            max_points=config.dataset.max_points,
            seed=config.seed,
            epoch=position.epoch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            min_size_policy=config.dataset.min_size_policy,
            skip_batches=position.batch,
            image_cache_bytes=int(config.dataset.image_cache_mib * 2**20),
            normalize=False,  # uint8 batches, normalised by the train step on the devices
            **pipeline_kwargs(config),
        )
    )


class _Validation:
    """Evaluates the current parameters on ``config.dataset.eval_split`` and records the result:
    scalars, density-map pictures and the best checkpoint."""

    def __init__(self, config, workdir: pathlib.Path, model, writer: MetricWriter, checkpoints: RunCheckpoints):
        self.config = config
        self.workdir = workdir
        self.writer = writer
        self.checkpoints = checkpoints
        self.mesh = local_eval_mesh(config.eval_batch_size)
        self.predict_fn = make_predict_fn(model.apply, self.mesh)
        self.trivial_count = mean_training_count(config, workdir)
        self.localization = LocalizationOptions.from_config(config)

    def __call__(self, params, step: int, epoch: int) -> dict[str, float]:
        """The validation metrics of ``params`` at ``step`` (with ``epoch`` added)."""
        batches = make_eval_batches(
            self.config, process_index=jax.process_index(), process_count=jax.process_count()
        )
        result = evaluate(
            self.predict_fn,
            to_local_mesh({"params": params}, self.mesh),
            batches,
            self.mesh,
            trivial_count=self.trivial_count,
            num_examples=self.config.num_pictures,
            localization=self.localization,
        )
        metrics = {**result.metrics, "epoch": epoch}
        self.writer.write_scalars(step, "val", metrics)
        if result.examples and jax.process_index() == 0:
            picture = density_picture(result.examples, title=f"step {step}, epoch {epoch}")
            save_picture(picture, self.workdir / _PICTURES_DIR / f"step_{step:08d}.png")
            self.writer.write_images(step, "val", "density_maps", picture[None])
        self.checkpoints.save_best_if_better(step, params, result.metrics)
        return metrics


class _TrainMetrics:
    """Step metrics on their way to the host: kept on the device between flushes (one transfer
    per interval), checked for NaN / inf, averaged per interval and per epoch."""

    def __init__(self, writer: MetricWriter, progress: ProgressBar, checkpoints: RunCheckpoints):
        self.writer = writer
        self.progress = progress
        self.checkpoints = checkpoints
        self.pending: list[dict] = []
        self.epoch_sums: dict[str, float] = {}
        self.epoch_steps = 0
        self.interval_start = time.perf_counter()

    def add(self, metrics: dict) -> None:
        self.pending.append(metrics)

    def stop(self, problem: str) -> NonFiniteLossError:
        """The error that ends the run, saying which checkpoint is the last good one."""
        self.checkpoints.wait_until_finished()
        latest = self.checkpoints.latest_step()
        return NonFiniteLossError(
            f"{problem}; training stopped. "
            + (f"The last checkpoint (step {latest}) predates it and holds finite values." if latest is not None
               else "No checkpoint was written.")
        )  # fmt: skip

    def check(self, step: int) -> list[dict]:
        """The pending metrics (the steps up to ``step``) on the host, without writing them.

        Raises:
          NonFiniteLossError: a pending loss is NaN or infinite.
        """
        host = jax.device_get(self.pending)
        first_step = step - len(host) + 1
        for offset, metrics in enumerate(host):
            if not np.isfinite(metrics["loss"]):
                raise self.stop(f"training loss is {float(metrics['loss'])} at step {first_step + offset}")
        return host

    def flush(self, step: int) -> None:
        """Brings the pending metrics (the steps up to ``step``) to the host, checks them and
        writes their mean.

        Raises:
          NonFiniteLossError: a pending loss is NaN or infinite.
        """
        if not self.pending:
            return
        host = self.check(step)
        elapsed = time.perf_counter() - self.interval_start
        means = {name: float(np.mean([m[name] for m in host])) for name in host[0]}
        for name, value in means.items():
            self.epoch_sums[name] = self.epoch_sums.get(name, 0.0) + value * len(host)
        self.epoch_steps += len(host)
        self.writer.write_scalars(step, "train", {**means, "steps_per_second": len(host) / elapsed})
        self.progress.set_postfix(loss=f"{means['loss']:.4g}", lr=f"{means['learning_rate']:.2g}")
        self.pending, self.interval_start = [], time.perf_counter()

    def snapshot(self, host: list[dict]) -> dict:
        """What a checkpoint keeps of the metrics: the pending step metrics (``host``, from
        :meth:`check`) and the epoch's sums so far, as JSON."""
        return {
            "pending": {name: [float(m[name]) for m in host] for name in (host[0] if host else {})},
            "dtypes": {name: str(np.asarray(value).dtype) for name, value in (host[0] if host else {}).items()},
            "epoch_sums": dict(self.epoch_sums),
            "epoch_steps": self.epoch_steps,
        }

    def resume(self, saved: dict) -> None:
        """Continues from a :meth:`snapshot` (the restored checkpoint's)."""
        pending, dtypes = saved.get("pending", {}), saved.get("dtypes", {})
        count = len(next(iter(pending.values()), []))
        # Same dtype as the device values, so the interval means are computed as they would have been.
        self.pending = [{name: np.asarray(values[i], dtypes[name]) for name, values in pending.items()} for i in range(count)]
        self.epoch_sums = dict(saved.get("epoch_sums", {}))
        self.epoch_steps = saved.get("epoch_steps", 0)

    def end_epoch(self) -> dict[str, float]:
        """The means of the epoch's flushed metrics; starts the next epoch's sums."""
        means = {name: total / max(self.epoch_steps, 1) for name, total in self.epoch_sums.items()}
        self.epoch_sums, self.epoch_steps = {}, 0
        return means


def _restore(checkpoints: RunCheckpoints, state: TrainState, writer: MetricWriter) -> tuple[TrainState, _Position, dict]:
    """The newest readable checkpoint's state, position and metrics snapshot
    (:meth:`_TrainMetrics.snapshot`), or ``state`` at the start. Either way the records a lost
    run wrote after that point are dropped."""
    restored = checkpoints.restore(state)
    if restored is None:
        writer.discard_after(-1)
        return state, _Position(), {}
    state, saved = restored
    position = _Position(step=saved["step"], epoch=saved["epoch"], batch=saved["batch"])
    metrics = saved.get("metrics", {})
    writer.discard_after(position.step, train_at_step=bool(metrics.get("pending")))
    return state, position, metrics


def _close_after_failure(checkpoints: RunCheckpoints) -> None:
    """Closes the managers as a run fails; a save that failed was already reported (the error
    that ends the run), so its failure is not raised a second time in place of that error."""
    with contextlib.suppress(CheckpointError):
        checkpoints.close()


def _epoch_line(position: _Position, total_steps: int, train_means: dict, eval_metrics: dict) -> str:
    line = f"epoch {position.epoch} step {position.step}/{total_steps}: train {_format(train_means, ('loss', 'count_error'))}"
    if eval_metrics.get("epoch") == position.epoch:  # evaluated at the end of this epoch
        line += f" | val {_format(eval_metrics, ('mae', 'rmse', 'nae'))} (trivial mae {eval_metrics['trivial_mae']:.4g})"
    return line


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, float]:
    """Trains the model of ``config``, evaluating and checkpointing into ``workdir``.

    Resumes from the newest checkpoint in ``workdir`` if there is one (same batches, same
    updates as an uninterrupted run).

    Args:
      config: a config like ``configs/default.py``'s; fields left unset take the training
        recipe of its loss (:func:`gcc_jax.runtime.resolve_recipe`), and the resolved config
        is what ``workdir/config.json`` records.
      workdir: the run's directory (created).

    Returns:
      The metrics of the last evaluation (``mae``, ``rmse``, ``nae``, ``trivial_mae``, ...).

    Raises:
      ValueError: a config the program cannot run (named field), a batch that does not split
        across the devices, a data set that cannot be opened or built, or a workdir whose
        checkpoint does not fit the model (the changed config fields are named). Nothing is
        written to the workdir in these cases.
      NonFiniteLossError: the loss or the train state became NaN / inf (the message names the
        step; no checkpoint is written after it).
    """
    config = resolve_recipe(config)
    # On failure the checkpoint managers are closed (pending saves finished) before the
    # exception leaves, instead of orbax's threads dying with the interpreter.
    with contextlib.ExitStack() as on_failure:
        metrics = _train_and_evaluate(config, pathlib.Path(workdir).absolute(), on_failure)
        on_failure.pop_all()
    return metrics


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path, on_failure: contextlib.ExitStack):
    mesh = create_mesh()
    _check_config(config, mesh.size)
    is_chief = jax.process_index() == 0
    steps_per_epoch, total_steps = _run_length(config)  # opens (or builds) the data set
    model = create_model(config)
    learning_rate_fn = create_learning_rate_fn(config.optimizer, steps_per_epoch, total_steps)
    state = create_train_state(config, model, create_optimizer(config.optimizer, learning_rate_fn), mesh)
    _check_resumable(config, workdir, state.params)
    if is_chief:  # the run can start: only now is anything written
        workdir.mkdir(parents=True, exist_ok=True)
        _save_config(config, workdir)
    checkpoints = RunCheckpoints(workdir, max_to_keep=config.max_checkpoints_to_keep)
    on_failure.callback(_close_after_failure, checkpoints)
    writer = MetricWriter(workdir, enabled=is_chief)
    on_failure.callback(writer.close)
    state, position, saved_metrics = _restore(checkpoints, state, writer)
    loss_fn = make_loss_fn(config.loss, crop_size=config.crop_size, mesh=mesh)
    train_step = make_train_step(mesh, loss_fn=loss_fn, learning_rate_fn=learning_rate_fn)
    validate = _Validation(config, workdir, model, writer, checkpoints)
    progress = ProgressBar(total_steps, position.step, enabled=is_chief and config.progress_bar, verbose=is_chief)
    on_failure.callback(progress.close)
    progress.write(
        f"{jax.process_count()} process(es), {mesh.size} device(s) ({jax.devices()[0].platform}); "
        f"{steps_per_epoch} steps per epoch, {total_steps} steps"
    )
    progress.write(
        f"workdir {workdir}: "
        + (f"resuming from the checkpoint at step {position.step} (epoch {position.epoch}, batch {position.batch})"
           if position.step else "a new run")
    )  # fmt: skip

    eval_metrics = {}
    if position.step == 0:  # every learning curve starts at the untrained model
        eval_metrics = validate(state.params, 0, 0)
        progress.write(
            f"step 0 (untrained): val {_format(eval_metrics, ('mae', 'rmse', 'nae'))} | trivial predictor "
            f"({validate.trivial_count:.1f} per image) mae {eval_metrics['trivial_mae']:.4g}"
        )
    train_metrics = _TrainMetrics(writer, progress, checkpoints)
    train_metrics.resume(saved_metrics)

    def save_checkpoint() -> None:
        # No checkpoint may hold a NaN / inf: the losses since the last flush and the whole
        # state are checked (log and checkpoint intervals need not divide each other).
        host = train_metrics.check(position.step)
        if not bool(jax.device_get(_all_finite(state))):
            raise train_metrics.stop(
                f"the train state (parameters or optimizer moments) holds NaN / inf after step {position.step}"
            )
        checkpoints.save(state, {**dataclasses.asdict(position), "metrics": train_metrics.snapshot(host)})

    batches = None
    with StopRequests() as stop_requests:
        stop_requests.start(position.step)
        while position.step < total_steps:
            if batches is None:
                batches = _train_batches(config, position)
            batch = next(batches)
            state, metrics = train_step(state, global_batch({k: batch[k] for k in TRAIN_BATCH_KEYS if k in batch}, mesh))
            train_metrics.add(metrics)
            position.step += 1
            position.batch += 1
            progress.update()
            epoch_done = position.batch == steps_per_epoch
            if epoch_done:
                position.epoch, position.batch, batches = position.epoch + 1, 0, None
            last = position.step == total_steps
            if position.step % config.log_every_steps == 0 or epoch_done or last:
                train_metrics.flush(position.step)
            if (epoch_done and position.epoch % config.eval_every_epochs == 0) or last:
                eval_metrics = validate(state.params, position.step, position.epoch)
            if epoch_done or last:
                progress.write(_epoch_line(position, total_steps, train_metrics.end_epoch(), eval_metrics))
            saved = position.step % config.checkpoint_every_steps == 0 or last
            if saved:
                save_checkpoint()
            if stop_requests.reached(position.step) and not last:
                if not saved:
                    save_checkpoint()
                train_metrics.flush(position.step)  # the metrics up to here, in the files too
                checkpoints.wait_until_finished()
                progress.close()
                raise TrainingStopped(position.step)

    checkpoints.wait_until_finished()
    best = checkpoints.best()
    checkpoints.close()
    writer.close()
    progress.close()
    if best is not None:
        progress.write(f"best val mae {best[1]['mae']:.4g} at step {best[0]}")
    progress.write(_where_results_are(workdir, checkpoints, writer))
    return eval_metrics


def _where_results_are(workdir: pathlib.Path, checkpoints: RunCheckpoints, writer: MetricWriter) -> str:
    """The closing lines of a run: where its checkpoints, measurements and pictures are."""
    return "\n".join([
        f"checkpoints: {checkpoints.directory} (resumable), {checkpoints.best_directory} (best val {checkpoints.best_metric})",
        f"metrics:     {writer.path}; TensorBoard: tensorboard --logdir {writer.tensorboard_dir}",
        f"pictures:    {workdir / _PICTURES_DIR}",
    ])  # fmt: skip
