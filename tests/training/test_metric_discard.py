"""A workdir's measurements describe one run: what a lost run wrote after the restored step is
removed from metrics.jsonl and from the TensorBoard event files (read back record by record,
with TensorFlow's own reader where it is installed)."""

import numpy as np
import pytest

from gcc_jax.training import MetricWriter, read_metrics
from gcc_jax.training.writers import Event, _read_records


def _scalars(workdir):
    found = []
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        for record in _read_records(path):
            event = Event.FromString(record)
            found += [(v.tag, event.step) for v in event.summary.value]
    return sorted(found)


def _lost_run(workdir):
    """Rows of steps 0-6 (val at 0 and 4, train at 2, 4 and 5 — the last a partial interval)
    and one image."""
    writer = MetricWriter(workdir)
    writer.write_scalars(0, "val", {"mae": 3.0})
    for step in (2, 4, 5):
        writer.write_scalars(step, "train", {"loss": float(step)})
    writer.write_scalars(4, "val", {"mae": 2.0})
    writer.write_images(4, "val", "density_maps", np.zeros((1, 8, 8, 3), np.uint8))
    writer.write_scalars(6, "train", {"loss": 6.0})
    writer.close()


def test_resuming_drops_the_records_after_the_checkpoint(tmp_path):
    _lost_run(tmp_path)
    writer = MetricWriter(tmp_path)
    writer.discard_after(5, train_at_step=True)  # a stop at 5 wrote a partial interval there
    writer.write_scalars(6, "train", {"loss": 6.5})
    writer.close()
    assert [(r["step"], r["split"]) for r in read_metrics(tmp_path)] == [(0, "val"), (2, "train"), (4, "train"), (4, "val"), (6, "train")]
    assert read_metrics(tmp_path, "train")[-1]["loss"] == 6.5
    assert _scalars(tmp_path) == sorted(
        [("val/mae", 0), ("train/loss", 2), ("train/loss", 4), ("val/mae", 4), ("val/density_maps", 4), ("train/loss", 6)]
    )


def test_a_run_started_again_from_scratch_keeps_nothing_of_the_lost_one(tmp_path):
    _lost_run(tmp_path)
    writer = MetricWriter(tmp_path)
    writer.discard_after(-1)
    writer.write_scalars(0, "val", {"mae": 3.5})
    writer.close()
    assert [(r["step"], r["split"], r["mae"]) for r in read_metrics(tmp_path)] == [(0, "val", 3.5)]
    assert _scalars(tmp_path) == [("val/mae", 0)]


def test_rewritten_event_files_read_back_with_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    _lost_run(tmp_path)
    writer = MetricWriter(tmp_path)
    writer.discard_after(4)
    writer.close()
    (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    steps = [event.step for event in tf.compat.v1.train.summary_iterator(str(path)) if event.summary.value]
    assert steps == [0, 2, 4, 4, 4]  # val/mae 0, train 2, train 4, val/mae 4, the image at 4
