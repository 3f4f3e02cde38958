"""Crowd-counting data: TFDS builders for the raw data sets, a synthetic crowd source, and
input pipelines that yield numpy batches for JAX.

Two input backends give the same batches (``loader=``, :data:`LOADERS`): ``"tf.data"`` (the
default) and ``"grain"``, which needs no TensorFlow. Importing this package does not import
TensorFlow; only the tf.data backend and the builders' ``download_and_prepare`` use it. A data
set prepared once (with TensorFlow) is read by the Grain backend without it.

Data sets, by name (:data:`DATASET_NAMES`):

====================== ================ =========================== =======================
name                   splits           stored                      default resize (pipeline)
====================== ================ =========================== =======================
shanghaitech/part_a    train, test      original images + points    none
shanghaitech/part_b    train, test      original images + points    none
ucf_qnrf               train, val, test original images + points    shorter side in [512, 2048]
nwpu_crowd             train, val, test + boxes, luminance, level   shorter side in [512, 2048]
jhu_crowd              train, val, test + box sizes, occlusion, …   shorter side in [512, 2048]
folder                 train, val, test your own annotated images   none
synthetic_crowd        train, val, test generated from a seed       none
====================== ================ =========================== =======================

Building a real data set (once; or lazily on first use when ``manual_dir`` is given)::

    python -m gcc_jax.data.build --dataset shanghaitech/part_a --manual_dir RAW --data_dir TFDS_DIR

or :func:`build_dataset`. ``RAW`` is the folder the archive was unpacked into (each builder's
``MANUAL_DOWNLOAD_INSTRUCTIONS`` gives the layout). Bad input (unreadable image, missing /
empty / malformed annotation) fails naming the file, or is skipped with a warning with
``on_bad_example="skip"``; points outside the image are dropped with a warning by default
(``out_of_image=``); what was skipped or dropped is listed in ``builder.info.metadata``.

Resizing happens in the pipelines, not in the builders, so the original resolution is never
lost and the rule stays a parameter (``resize=``): see :mod:`gcc_jax.data.catalog`.

Training — one epoch, reshuffled from ``(seed, epoch)``::

    epoch = make_train_dataset("shanghaitech/part_a", crop_size=256, batch_size=8,
                               max_points=2048, seed=0, epoch=e, data_dir=TFDS_DIR,
                               process_index=jax.process_index(),
                               process_count=jax.process_count(), loader="grain")
    len(epoch)            # batches this epoch (= train_steps_per_epoch(...))
    for batch in epoch:   # dict of numpy arrays, b = batch_size // process_count
        batch["image"], batch["points"], batch["point_mask"], ...

:class:`TrainEpoch` lists the entries of a training batch, with shapes and units.

Resume mid-epoch with ``skip_batches=k`` (same batches as the uninterrupted epoch from batch
``k`` on). Images whose shorter side is below the crop are padded (``min_size_policy="pad"``)
or upscaled (``"upscale"``).

Evaluation — full images, each process a disjoint share (``p, p + P, …``)::

    for batch in make_eval_dataset("ucf_qnrf", split="test", data_dir=TFDS_DIR):
        batch["image"], batch["image_hw"], batch["count"], ...

:class:`EvalDataset` lists the entries of an evaluation batch.

Synthetic data (no download): ``name="synthetic_crowd"`` with ``synthetic={...}`` options
(:class:`SyntheticCrowdOptions`: seed, height, width, num_train / num_val / num_test,
min_people / max_people, empty_fraction, head radii, clutter, noise). Render examples with
``python -m gcc_jax.data.render_synthetic --out DIR --num 8``.
"""

from gcc_jax.data._builder_base import BadExampleError
from gcc_jax.data.build import build_dataset, load_builder
from gcc_jax.data.catalog import DATASET_NAMES, DatasetSpec, get_spec
from gcc_jax.data.pipeline import (
    DEFAULT_IMAGE_CACHE_BYTES,
    LOADERS,
    EvalDataset,
    TrainEpoch,
    make_eval_dataset,
    make_train_dataset,
    train_steps_per_epoch,
)
from gcc_jax.data.plan import ResizeRule
from gcc_jax.data.synthetic import SyntheticCrowdOptions

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_IMAGE_CACHE_BYTES",
    "LOADERS",
    "BadExampleError",
    "DatasetSpec",
    "EvalDataset",
    "ResizeRule",
    "SyntheticCrowdOptions",
    "TrainEpoch",
    "build_dataset",
    "get_spec",
    "load_builder",
    "make_eval_dataset",
    "make_train_dataset",
    "train_steps_per_epoch",
]
