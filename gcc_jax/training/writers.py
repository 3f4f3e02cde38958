"""Where measurements go: ``WORKDIR/metrics.jsonl``, TensorBoard event files, the console.

``metrics.jsonl`` holds one JSON object per line: ``{"step": int, "split": "train" | "val" |
..., <metric>: float, ...}``. TensorBoard scalars are named ``<split>/<metric>``, images
``<split>/<name>``. Only process 0 writes; the writers are inert on the others.

TensorBoard files are written with tensorboardX (a small pure-Python writer, the one GL's
trainer uses): ``tf.summary`` would need the ``tensorboard`` package, which ``tensorflow-cpu``
does not install.

A workdir's measurements describe one run: when a run resumes from a checkpoint (or starts
again from step 0), :meth:`MetricWriter.discard_after` removes what a lost run wrote after
that point from ``metrics.jsonl`` and from the event files, which are rewritten record by
record (TFRecord framing with masked CRC-32C, as TensorBoard reads it).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import struct
import sys
import uuid
from collections.abc import Iterator, Mapping

import numpy as np
import tqdm
from tensorboardX import SummaryWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

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
        self.tensorboard_dir = pathlib.Path(workdir) / _TENSORBOARD_DIR
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def _summary(self) -> SummaryWriter:
        # Opened at the first write, so that discard_after never meets this run's own file.
        if self._writer is None:
            # tensorboardX names the file after the second and the host: a run restarted within
            # the same second would open the lost run's file again and overwrite it.
            self._writer = SummaryWriter(str(self.tensorboard_dir), filename_suffix=f".{uuid.uuid4().hex[:8]}")
        return self._writer

    def discard_after(self, step: int, *, train_at_step: bool = False) -> None:
        """Drops the records of steps after ``step``: a resumed run writes them again.

        Args:
          step: the step the run resumes from (-1 for a run that starts from scratch).
          train_at_step: drop the ``train`` records of ``step`` itself too (they averaged a
            partial logging interval, which the resumed run completes and writes later).
        """
        if not self.enabled:
            return

        def kept(record_step: int, split: str) -> bool:
            return record_step < step or (record_step == step and not (train_at_step and split == "train"))

        if self.path.exists():
            lines = [line for line in self.path.read_text().splitlines() if line]
            records = [json.loads(line) for line in lines]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line, r in zip(lines, records) if kept(r["step"], r["split"])))
            os.replace(tmp, self.path)
        for events in sorted(self.tensorboard_dir.glob("events.out.tfevents.*")):
            _rewrite_events(events, lambda event: not event.summary.value or kept(event.step, _split_of(event)))

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
        if self._writer is not None:
            self._writer.close()


def _split_of(event: Event) -> str:
    """The split of a summary event: its tags are ``<split>/<name>``."""
    return event.summary.value[0].tag.split("/", 1)[0]


def _read_records(path: pathlib.Path) -> Iterator[bytes]:
    """The records of a TFRecord file; a record cut short by a kill ends the file."""
    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        end = offset + 12 + length + 4
        if end > len(data):
            return
        yield data[offset + 12 : offset + 12 + length]
        offset = end


def _rewrite_events(path: pathlib.Path, keep) -> None:
    """Rewrites the event file ``path`` with the events for which ``keep(event)`` is true."""
    records = list(_read_records(path))
    kept = [record for record in records if keep(Event.FromString(record))]
    if len(kept) == len(records) and path.stat().st_size == sum(len(r) + 16 for r in records):
        return
    framed = bytearray()
    for record in kept:
        header = struct.pack("<Q", len(record))
        framed += header + struct.pack("<I", masked_crc32c(header)) + record + struct.pack("<I", masked_crc32c(record))
    tmp = path.parent / ".events.rewrite.tmp"  # a name TensorBoard does not read
    tmp.write_bytes(bytes(framed))
    os.replace(tmp, path)


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
