"""Checkpoints of a run (orbax): resumable ones, and the best model by validation MAE apart.

Writing (:class:`RunCheckpoints`, used by training) and reading (:func:`restore_params`, used by
inference, evaluation and prediction) share this module so that the on-disk layout below is
defined once.

Layout of a workdir::

    WORKDIR/checkpoints/<step>/state      TrainState (step, params, opt_state)
    WORKDIR/checkpoints/<step>/position   {"step", "epoch", "batch"}: where the input
                                          pipeline continues (batch = batches of `epoch`
                                          already consumed); "metrics": the step metrics not
                                          yet averaged into metrics.jsonl (training loop)
    WORKDIR/damaged_checkpoints/<step>    checkpoints a resuming run could not read
    WORKDIR/damaged_checkpoints/best/<step>  a best checkpoint whose metrics it could not read
    WORKDIR/best/<step>/params            parameters of the best evaluation so far
    WORKDIR/best/<step>/metrics           its validation metrics

Writes are atomic (orbax writes to a temporary directory and renames it when complete, so a
kill during a save leaves the previous checkpoints intact and the partial one is ignored and
cleaned up on the next start) and asynchronous (training continues while a checkpoint is
written). Every process must make the same calls (saving is a collective on several hosts).

Faults: a checkpoint that cannot be read (a truncated or deleted file, a damaged disk) is
skipped with one warning naming it and the reason, and the newest intact one is used; a
resuming run moves the damaged one to ``WORKDIR/damaged_checkpoints/<step>`` so that the
step can be saved again. With none intact, :class:`CheckpointError` says what to delete. A
save that fails (disk full, permission denied) raises :class:`CheckpointError` naming the
directory; the checkpoints saved before it stay as they were.

The training randomness needs no saved RNG state: VGG19Density has no dropout, and every
crop and flip is a function of ``(config.seed, epoch, example index)``, so ``position`` fixes
all that follows.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from flax.training.train_state import TrainState

__all__ = ["CheckpointError", "RunCheckpoints", "latest_param_shapes", "param_shape_differences", "restore_params"]

_log = logging.getLogger(__name__)

_LATEST_DIR = "checkpoints"
_BEST_DIR = "best"
# Where a resuming run moves checkpoints it could not read (outside orbax's directory, whose
# step numbers it would otherwise refuse to save again).
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointError(OSError):
    """A checkpoint could not be written, or no checkpoint of a workdir could be read."""


def _reason(err: BaseException) -> str:
    """One line saying why ``err`` happened: the first line of the innermost exception it was
    raised from (orbax wraps tensorstore's precise message in a page of JSON), with its type."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _newest_readable(
    directory: pathlib.Path, steps, read: Callable[[int], Any], *, on_damaged: Callable[[int], str] | None = None
) -> tuple[int, Any] | None:
    """``(step, read(step))`` of the newest of ``steps`` that ``read`` can read, or ``None``
    without steps; ``on_damaged(step)`` is called for each one that cannot be read and returns
    what it did about it (said on the warning line).

    Each step that fails is named on one warning line with the reason.

    Raises:
      CheckpointError: ``steps`` is not empty and none of them can be read.
    """
    steps = sorted(steps, reverse=True)
    failures = []
    for step in steps:
        try:
            return step, read(step)
        except Exception as err:  # orbax / tensorstore report a damaged file in many types
            failures.append(f"{step} ({_reason(err)})")
            done = on_damaged(step) if on_damaged is not None else ""
            older = [s for s in steps if s < step]
            then = f"trying the one at step {older[0]}" if older else ""
            _log.warning("; ".join(filter(None, [f"checkpoint {directory / str(step)} cannot be read ({_reason(err)})", done, then])))
    if not failures:
        return None
    raise CheckpointError(
        f"no checkpoint in {directory} can be read (steps {', '.join(failures)}): delete {directory} to start "
        "afresh, or give the --workdir of another run"
    )


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
        self._workdir = workdir
        self.directory = workdir / _LATEST_DIR
        self.best_directory = workdir / _BEST_DIR
        self.best_metric = best_metric
        # On several hosts each save ends in barriers named after the step directory; the two
        # managers save the same step when a checkpoint and a new best fall on one step, so each
        # gets its own barrier names (orbax's remedy for concurrent managers). Without them the
        # second save finds the first's barrier "already ongoing" and the processes hang.
        self._latest = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                cleanup_tmp_directories=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=_LATEST_DIR),
            ),
            item_names=("state", "position"),
        )
        # Orbax ranks the best steps by their metrics: one it cannot read (or without the
        # metric) fails the manager's start or a later save, so it is set aside first.
        unreadable = self._unreadable_best_steps()
        if unreadable and jax.process_count() > 1:  # every process has looked before any moves
            multihost_utils.sync_global_devices("gcc_jax checked the best checkpoints")
        for step, reason in unreadable.items():
            moved = self._move_aside(self.best_directory, step, f"{DAMAGED_DIR}/{_BEST_DIR}")
            _log.warning(
                f"best checkpoint {self.best_directory / str(step)} cannot be read ({reason}); {moved}; "
                "the next validation result becomes the best"
            )
        self._best = ocp.CheckpointManager(
            self.best_directory,
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

    def _unreadable_best_steps(self) -> dict[int, str]:
        """The best steps whose metrics cannot be read or lack the ranking metric, each with the
        reason."""
        unreadable = {}
        for step in _complete_steps(self.best_directory):
            try:  # the item "metrics" of a save is the JSON file metrics/metrics
                with ocp.Checkpointer(ocp.JsonCheckpointHandler(filename="metrics")) as reader:
                    metrics = reader.restore(self.best_directory / str(step) / "metrics")
                float(metrics[self.best_metric])
            except Exception as err:  # a damaged file fails in json, orbax or the lookup
                unreadable[step] = _reason(err)
        return unreadable

    def latest_step(self) -> int | None:
        """Step of the newest complete resumable checkpoint, or ``None``."""
        return self._latest.latest_step()

    def save(self, state: TrainState, position: dict) -> None:
        """Starts writing a resumable checkpoint of ``state`` at ``position`` (asynchronous).

        Args:
          state: the train state after ``position["step"]`` steps.
          position: JSON-serialisable; ``"step"``, ``"epoch"`` and ``"batch"`` at least.

        Raises:
          CheckpointError: this save or the one before it could not be written.
        """
        step = int(position["step"])
        with _WriteErrors(self._latest, step):
            self._latest.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), position=ocp.args.JsonSave(dict(position))),
            )

    def restore(self, state: TrainState) -> tuple[TrainState, dict] | None:
        """The newest readable resumable checkpoint, placed like ``state``, or ``None`` if there
        is none.

        A checkpoint that cannot be read is named on a warning line and moved to
        ``WORKDIR/damaged_checkpoints/<step>`` (by process 0), and the next older one is tried.

        Args:
          state: a train state of the run (its shapes and shardings are the target).

        Returns:
          ``(state, position)`` or ``None``.

        Raises:
          CheckpointError: there are checkpoints and none of them can be read.
        """
        args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(state)), position=ocp.args.JsonRestore())
        found = _newest_readable(
            self._latest.directory, self._latest.all_steps(), lambda step: self._latest.restore(step, args=args),
            on_damaged=self._set_aside_latest,
        )  # fmt: skip
        if found is None:
            return None
        restored = found[1]
        return restored["state"], dict(restored["position"])

    def _set_aside_latest(self, step: int) -> str:
        moved = self._move_aside(self.directory, step, DAMAGED_DIR)
        self._latest.reload()
        return moved

    def _move_aside(self, directory: pathlib.Path, step: int, target_dir: str) -> str:
        """Moves the damaged checkpoint ``directory/step`` to ``WORKDIR/target_dir/step`` (process
        0; the others wait), so that the run can write that step again; says where to."""
        source = pathlib.Path(directory) / str(step)
        target = self._workdir / target_dir / str(step)
        if jax.process_index() == 0 and source.exists():
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"gcc_jax set aside {target_dir}/{step}")
        return f"moved to {target}"

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

        Raises:
          CheckpointError: the save (or the one before it) could not be written.
        """
        value = metrics[self.best_metric]
        current = self.best()
        if current is not None and not value < current[1][self.best_metric]:
            return False
        metrics = {key: float(v) for key, v in metrics.items()}
        with _WriteErrors(self._best, step):
            self._best.save(
                step,
                args=ocp.args.Composite(params=ocp.args.StandardSave(params), metrics=ocp.args.JsonSave(metrics)),
                metrics=metrics,
                force=True,
            )
        return True

    def wait_until_finished(self) -> None:
        """Blocks until every started save is on disk.

        Raises:
          CheckpointError: a save could not be written.
        """
        for manager in (self._latest, self._best):
            with _WriteErrors(manager, None):
                manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the managers.

        Raises:
          CheckpointError: a pending save could not be written (both managers are closed).
        """
        try:
            with _WriteErrors(self._latest, None):
                self._latest.close()
        finally:
            with _WriteErrors(self._best, None):
                self._best.close()


class _WriteErrors:
    """Turns an exception of a checkpoint write into a :class:`CheckpointError` that names the
    directory, the reason and the newest checkpoint still intact."""

    def __init__(self, manager: ocp.CheckpointManager, step: int | None):
        self.manager = manager
        self.step = step

    def __enter__(self):
        return self

    def __exit__(self, kind, err, traceback):
        if err is None or not isinstance(err, Exception) or isinstance(err, CheckpointError):
            return False
        directory = pathlib.Path(self.manager.directory)
        # The failed step may be listed while its temporary folder is still there: only the
        # steps whose folders are complete count as intact.
        intact = [s for s in self.manager.all_steps(read=True) if (directory / str(s)).is_dir()]
        saved = f"the checkpoint of step {max(intact)} is intact" if intact else "no earlier checkpoint was saved"
        what = f"the checkpoint of step {self.step}" if self.step is not None else "a checkpoint"
        raise CheckpointError(f"cannot write {what} to {directory} ({_reason(err)}); {saved}") from err


def latest_param_shapes(workdir: str | os.PathLike) -> tuple[int, dict[str, tuple[int, ...]]] | None:
    """Step and parameter shapes of a workdir's newest resumable checkpoint, without loading it.

    Read from the checkpoint's metadata, so nothing is restored and nothing is written. A
    checkpoint whose metadata cannot be read is passed over (restoring names it).

    Returns:
      ``(step, {"features/conv1_1/kernel": shape, ...})``, or ``None`` without a readable one.
    """
    directory = pathlib.Path(workdir).absolute() / _LATEST_DIR
    for step in sorted(_complete_steps(directory), reverse=True):
        try:
            metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(directory / str(step) / "state"))
            tree = getattr(metadata, "tree", metadata)
            leaves = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
        except Exception:  # damaged: RunCheckpoints.restore says so and falls back
            continue
        return step, {_key_path(path): tuple(leaf.shape) for path, leaf in leaves}
    return None


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

    ``"best"`` and ``"latest"`` pass over a checkpoint that cannot be read, naming it on a
    warning line, and take the newest readable one (``"best"`` then falls back to the
    resumable checkpoints); nothing in the workdir is changed.

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
      CheckpointError: checkpoints are there, and none of them (or not the step asked for)
        can be read.
    """
    workdir = pathlib.Path(workdir).absolute()
    # Plain checkpointers on the step folders: a read-only CheckpointManager logs warnings about
    # being read-only, and nothing here needs its bookkeeping.
    best_dir, latest_dir = workdir / _BEST_DIR, workdir / _LATEST_DIR
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params)

    def read_best(step):
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(best_dir / str(step) / "params", abstract_params)

    def read_latest(step):  # only the parameters out of a saved train state
        with ocp.PyTreeCheckpointer() as checkpointer:
            state = checkpointer.restore(
                latest_dir / str(step) / "state",
                args=ocp.args.PyTreeRestore(
                    item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True
                ),
            )
        return state["params"]

    if which not in ("best", "latest"):
        step = int(which)
        if step not in _complete_steps(latest_dir):
            raise FileNotFoundError(f"no checkpoint of step {step} in {latest_dir}")
        try:
            return read_latest(step), step
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {latest_dir / str(step)} cannot be read ({_reason(err)}); use --which latest or another step"
            ) from err
    if which == "best":
        try:  # the best directory keeps one checkpoint
            found = _newest_readable(
                best_dir, _complete_steps(best_dir), read_best,
                on_damaged=lambda step: "using the newest readable resumable checkpoint",
            )  # fmt: skip
        except CheckpointError:
            found = _newest_readable(latest_dir, _complete_steps(latest_dir), read_latest)
    else:
        found = _newest_readable(latest_dir, _complete_steps(latest_dir), read_latest)
    if found is None:
        raise FileNotFoundError(f"no {which!r} checkpoint in {workdir}")
    step, params = found
    return params, step


def _complete_steps(directory: pathlib.Path) -> list[int]:
    """Steps of the complete checkpoints in ``directory`` (orbax's partial ones carry a suffix)."""
    return [int(p.name) for p in directory.glob("*") if p.name.isdigit() and p.is_dir()]
