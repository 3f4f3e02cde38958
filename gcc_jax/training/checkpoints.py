"""Checkpoints of a run (orbax): resumable ones, and the best model by validation MAE apart.

Layout of a workdir::

    WORKDIR/checkpoints/<step>/state      TrainState (step, params, opt_state)
    WORKDIR/checkpoints/<step>/position   {"step", "epoch", "batch"}: where the input
                                          pipeline continues (batch = batches of `epoch`
                                          already consumed)
    WORKDIR/best/<step>/params            parameters of the best evaluation so far
    WORKDIR/best/<step>/metrics           its validation metrics

Writes are atomic (orbax writes to a temporary directory and renames it when complete, so a
kill during a save leaves the previous checkpoints intact and the partial one is ignored and
cleaned up on the next start) and asynchronous (training continues while a checkpoint is
written). Every process must make the same calls (saving is a collective on several hosts).

The training randomness needs no saved RNG state: VGG19Density has no dropout, and every
crop and flip is a function of ``(config.seed, epoch, example index)``, so ``position`` fixes
all that follows.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from gcc_jax.training.state import TrainState

__all__ = ["RunCheckpoints", "latest_param_shapes", "param_shape_differences", "restore_params"]

_LATEST_DIR = "checkpoints"
_BEST_DIR = "best"


def _abstract(tree):
    """Shapes, dtypes and shardings of ``tree``: the target orbax restores into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class RunCheckpoints:
    """The resumable checkpoints and the best checkpoint of one workdir.

    Args:
      workdir: the run's directory.
      max_to_keep: resumable checkpoints kept (older ones are deleted).
      best_metric: validation metric that ranks the best checkpoint (lower is better).
    """

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 2, best_metric: str = "mae"):
        workdir = pathlib.Path(workdir).absolute()
        self.best_metric = best_metric
        # On several hosts each save ends in barriers named after the step directory; the two
        # managers save the same step when a checkpoint and a new best fall on one step, so each
        # gets its own barrier names (orbax's remedy for concurrent managers). Without them the
        # second save finds the first's barrier "already ongoing" and the processes hang.
        self._latest = ocp.CheckpointManager(
            workdir / _LATEST_DIR,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                cleanup_tmp_directories=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=_LATEST_DIR),
            ),
            item_names=("state", "position"),
        )
        self._best = ocp.CheckpointManager(
            workdir / _BEST_DIR,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[best_metric],
                best_mode="min",
                create=True,
                cleanup_tmp_directories=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=_BEST_DIR),
            ),
            item_names=("params", "metrics"),
        )

    def latest_step(self) -> int | None:
        """Step of the newest complete resumable checkpoint, or ``None``."""
        return self._latest.latest_step()

    def save(self, state: TrainState, position: dict[str, int]) -> None:
        """Starts writing a resumable checkpoint of ``state`` at ``position`` (asynchronous)."""
        step = int(position["step"])
        self._latest.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), position=ocp.args.JsonSave(dict(position))),
        )

    def restore(self, state: TrainState) -> tuple[TrainState, dict[str, int]] | None:
        """The newest resumable checkpoint, placed like ``state``, or ``None`` if there is none.

        Args:
          state: a train state of the run (its shapes and shardings are the target).

        Returns:
          ``(state, position)`` or ``None``.
        """
        step = self._latest.latest_step()
        if step is None:
            return None
        restored = self._latest.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(state)), position=ocp.args.JsonRestore()),
        )
        return restored["state"], dict(restored["position"])

    def best(self) -> tuple[int, dict[str, float]] | None:
        """``(step, metrics)`` of the best checkpoint, or ``None`` before the first."""
        step = self._best.best_step()
        if step is None:
            return None
        metrics = self._best.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))["metrics"]
        return step, dict(metrics)

    def save_best_if_better(self, step: int, params, metrics: dict[str, float]) -> bool:
        """Saves ``params`` as the best checkpoint if ``metrics`` beat the current best.

        Returns:
          Whether it was saved.
        """
        value = metrics[self.best_metric]
        current = self.best()
        if current is not None and not value < current[1][self.best_metric]:
            return False
        metrics = {key: float(v) for key, v in metrics.items()}
        self._best.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params), metrics=ocp.args.JsonSave(metrics)),
            metrics=metrics,
            force=True,
        )
        return True

    def wait_until_finished(self) -> None:
        """Blocks until every started save is on disk."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the managers."""
        self._latest.close()
        self._best.close()


def latest_param_shapes(workdir: str | os.PathLike) -> tuple[int, dict[str, tuple[int, ...]]] | None:
    """Step and parameter shapes of a workdir's newest resumable checkpoint, without loading it.

    Read from the checkpoint's metadata, so nothing is restored and nothing is written.

    Returns:
      ``(step, {"features/conv1_1/kernel": shape, ...})``, or ``None`` without a checkpoint.
    """
    directory = pathlib.Path(workdir).absolute() / _LATEST_DIR
    # Complete checkpoints are folders named by their step; orbax's partial ones carry a suffix.
    steps = sorted((int(p.name) for p in directory.glob("*") if p.name.isdigit() and (p / "state").is_dir()), reverse=True)
    if not steps:
        return None
    metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(directory / str(steps[0]) / "state"))
    tree = getattr(metadata, "tree", metadata)
    leaves = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
    return steps[0], {_key_path(path): tuple(leaf.shape) for path, leaf in leaves}


def param_shape_differences(saved: dict[str, tuple[int, ...]], params: Any) -> list[str]:
    """Where ``params`` and the saved shapes (:func:`latest_param_shapes`) disagree.

    Returns:
      One ``"name: saved (…), now (…)"`` entry per parameter whose shape differs, is missing
      or is new; empty when the checkpoint fits.
    """
    now = {_key_path(path): tuple(np.shape(leaf)) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    return [
        f"{name}: saved {saved.get(name, 'none')}, now {now.get(name, 'none')}"
        for name in sorted(set(saved) | set(now))
        if saved.get(name) != now.get(name)
    ]


def _key_path(path) -> str:
    return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def restore_params(workdir: str | os.PathLike, abstract_params: Any, *, which: str = "best") -> tuple[Any, int]:
    """Parameters of a run's checkpoint, for evaluation or prediction.

    Args:
      workdir: the run's directory.
      abstract_params: the parameter tree's shapes / dtypes / shardings
        (``jax.ShapeDtypeStruct`` leaves, e.g. from ``jax.eval_shape`` with shardings set).
      which: ``"best"`` (best validation MAE), ``"latest"`` (newest resumable checkpoint) or a
        step number of a resumable checkpoint.

    Returns:
      ``(params, step)``.

    Raises:
      FileNotFoundError: no such checkpoint in ``workdir``.
    """
    workdir = pathlib.Path(workdir).absolute()
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    if which == "best":
        manager = ocp.CheckpointManager(workdir / _BEST_DIR, options=options, item_names=("params", "metrics"))
        step = manager.latest_step()  # the best directory keeps one checkpoint
        item = "params"
        restore = ocp.args.StandardRestore(abstract_params)
    else:
        manager = ocp.CheckpointManager(workdir / _LATEST_DIR, options=options, item_names=("state", "position"))
        step = manager.latest_step() if which == "latest" else int(which)
        item = "state"
        # Restore only the parameters out of the saved train state.
        restore = ocp.args.PyTreeRestore(
            item={"params": abstract_params},
            restore_args={"params": jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params)},
            partial_restore=True,
        )
    if step is None or step not in manager.all_steps():
        raise FileNotFoundError(f"no {which!r} checkpoint in {workdir}")
    restored = manager.restore(step, args=ocp.args.Composite(**{item: restore}))[item]
    manager.close()
    return (restored if item == "params" else restored["params"]), step
