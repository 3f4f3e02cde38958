"""Where measurements go: ``WORKDIR/metrics.jsonl``, TensorBoard event files, the console.

``metrics.jsonl`` holds one JSON object per line: ``{"step": int, "split": "train" | "val" |
..., <metric>: float, ...}``. TensorBoard scalars are named ``<split>/<metric>``, images
``<split>/<name>``. Only process 0 writes; the writers are inert on the others.

TensorBoard files are written with tensorboardX (a small pure-Python writer, the one GL's
trainer uses): ``tf.summary`` would need the ``tensorboard`` package, which ``tensorflow-cpu``
does not install.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from collections.abc import Mapping

import numpy as np
import tqdm
from tensorboardX import SummaryWriter

__all__ = ["METRICS_FILE", "MetricWriter", "ProgressBar", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
_TENSORBOARD_DIR = "tensorboard"


def _json_number(value):
    value = float(value)
    # JSON has no NaN / inf; null keeps the line parseable and says "not a number".
    return value if math.isfinite(value) else None


class MetricWriter:
    """Appends metrics to ``metrics.jsonl`` and TensorBoard (process 0 only).

    Args:
      workdir: the run's directory.
      enabled: whether this process writes (``jax.process_index() == 0``).
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self._summary = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._summary = SummaryWriter(str(pathlib.Path(workdir) / _TENSORBOARD_DIR))

    def truncate_after(self, step: int) -> None:
        """Drops the records of steps after ``step`` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write_scalars(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        """One ``metrics.jsonl`` line and one TensorBoard scalar per metric."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        record.update({name: _json_number(value) for name, value in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in metrics.items():
            self._summary.add_scalar(f"{split}/{name}", float(value), global_step=int(step))
        self._summary.flush()

    def write_images(self, step: int, split: str, name: str, images: np.ndarray) -> None:
        """TensorBoard images ``[n, H, W, 3]`` uint8."""
        if not self.enabled or len(images) == 0:
            return
        self._summary.add_images(f"{split}/{name}", np.asarray(images), global_step=int(step), dataformats="NHWC")
        self._summary.flush()

    def close(self) -> None:
        if self._summary is not None:
            self._summary.close()


def read_metrics(workdir: str | os.PathLike, split: str | None = None) -> list[dict]:
    """The records of ``WORKDIR/metrics.jsonl`` (of one ``split`` if given), in file order."""
    path = pathlib.Path(workdir) / METRICS_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in records if split is None or r["split"] == split]


class ProgressBar:
    """A console progress bar with rate and ETA (tqdm), plus one-line messages above it.

    Args:
      total: steps of the whole run.
      initial: step the run starts (or resumes) at.
      enabled: draw the bar (process 0 and ``config.progress_bar``); messages are printed
        whenever ``verbose``.
      verbose: print messages (process 0).
    """

    def __init__(self, total: int, initial: int, *, enabled: bool, verbose: bool):
        self._verbose = verbose
        self._bar = tqdm.tqdm(
            total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not enabled, file=sys.stderr
        )

    def update(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def set_postfix(self, **values) -> None:
        self._bar.set_postfix(values, refresh=False)

    def write(self, message: str) -> None:
        """Prints ``message`` on its own line (above the bar)."""
        if self._verbose:
            tqdm.tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    def close(self) -> None:
        self._bar.close()
