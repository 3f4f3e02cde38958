"""The data sets gcc_jax knows by name, and the reference resize rule of each.

Where the resize happens, and why: the TFDS builders store every image at its *original*
resolution with its original JPEG bytes, and the pipelines apply the reference resize rule on
the fly (``resize=`` of :func:`gcc_jax.data.make_train_dataset` /
:func:`~gcc_jax.data.make_eval_dataset`, default below). The references disagree on the rule
(BL / GL: shorter side into ``[512, 2048]``; DM-Count on NWPU: ``[384, 1920]`` with sides
floored to multiples of 16), so baking one into the stored data would fix one paper's choice
and lose the original resolution that evaluation at full size, localization metrics and
predictions mapped back to the original image need. The cost is a resize per image per epoch
(measured in ``benchmarks/input_pipeline.py``).
"""

from __future__ import annotations

import dataclasses

from gcc_jax.data.plan import ResizeRule

__all__ = ["DATASETS", "DATASET_NAMES", "DatasetSpec", "get_spec"]

_BL_RESIZE = ResizeRule(kind="shorter_side", min_size=512, max_size=2048)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipelines need to know about a named data set.

    Attributes:
      name: the public name, e.g. ``"shanghaitech/part_a"``.
      tfds_name: the TFDS builder name (with config), or ``None`` for ``synthetic_crowd``.
      splits: the split names.
      resize: the default :class:`~gcc_jax.data.plan.ResizeRule` (the one its
        references' loaders apply).
      boxes: how per-head boxes are stored: ``"xyxy"`` (NWPU ``boxes``), ``"wh"`` (JHU
        ``box_size`` around the point), or ``None``.
    """

    name: str
    tfds_name: str | None
    splits: tuple[str, ...]
    resize: ResizeRule
    boxes: str | None = None


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec("shanghaitech/part_a", "shanghaitech/part_a", ("train", "test"), ResizeRule()),
        DatasetSpec("shanghaitech/part_b", "shanghaitech/part_b", ("train", "test"), ResizeRule()),
        DatasetSpec("ucf_qnrf", "ucf_qnrf", ("train", "val", "test"), _BL_RESIZE),
        DatasetSpec("nwpu_crowd", "nwpu_crowd", ("train", "val", "test"), _BL_RESIZE, boxes="xyxy"),
        DatasetSpec("jhu_crowd", "jhu_crowd", ("train", "val", "test"), _BL_RESIZE, boxes="wh"),
        # Your own images (gcc_jax.data.folder), used at their own size as predict sees them.
        DatasetSpec("folder", "crowd_folder", ("train", "val", "test"), ResizeRule()),
        DatasetSpec("synthetic_crowd", None, ("train", "val", "test"), ResizeRule()),
    )
}
DATASET_NAMES = tuple(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``.

    Raises:
      ValueError: unknown name (lists the known ones).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return DATASETS[name]
