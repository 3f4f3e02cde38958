"""Random-access example sources behind the pipelines: prepared TFDS data or synthetic crowds.

A source is a sequence of raw examples: ``len(source)`` and ``source.read(i)``, a dict with

* ``image``: encoded PNG / JPEG bytes (``source.encoded`` is True; the pipeline decodes
  them) or a uint8 ``[H, W, 3]`` array;
* ``points``: float32 ``[n, 2]`` ``(x, y)`` pixels of the stored image;
* ``boxes``: float32 ``[n, 4]`` ``(x1, y1, x2, y2)`` pixels, only where ``source.has_boxes``;
* ``count``: float32 true count (NaN where the image is not annotated, e.g. NWPU test);
* ``filename``: str.

Random access is what lets every process draw its disjoint share of one global,
per-epoch permutation, and skip to any batch when resuming. ``source.cache_key`` names the
split for the decoded-image cache (:mod:`gcc_jax.data.image_cache`). Reading needs no
TensorFlow: a prepared TFDS data set is read through its ArrayRecord data source.
"""

from __future__ import annotations

import functools
import io
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from gcc_jax.data.build import load_builder
from gcc_jax.data.catalog import get_spec
from gcc_jax.data.synthetic import SyntheticCrowdOptions, generate_example

__all__ = ["SyntheticSource", "TfdsSource", "open_source"]

# Generated synthetic images are kept in memory up to this many bytes per source.
_SYNTHETIC_CACHE_BYTES = 512 * 2**20


class TfdsSource:
    """A split of a prepared TFDS crowd data set, read through an ArrayRecord data source."""

    encoded = True

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str, boxes: str | None):
        split = _clamp_absolute_slices(split, builder)
        self._records = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        # The folder, the split and when it was prepared: a data set rebuilt in place while this
        # process runs is not confused with the old one by the caches of decoded images.
        info = os.path.join(str(builder.data_dir), "dataset_info.json")
        self.cache_key = (str(builder.data_dir), split, os.stat(info).st_mtime_ns if os.path.exists(info) else None)
        self._boxes = boxes
        self.has_boxes = boxes is not None

    def __len__(self) -> int:
        return len(self._records)

    def read(self, index: int) -> dict:
        record = self._records[int(index)]
        points = np.asarray(record["points"], np.float32).reshape(-1, 2)
        annotated = bool(record.get("annotated", True))
        example = {
            "image": record["image"],
            "points": points,
            "count": np.float32(len(points) if annotated else np.nan),
            "filename": _text(record["image/filename"]),
        }
        if self._boxes == "xyxy":
            example["boxes"] = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
        elif self._boxes == "wh":
            half = np.asarray(record["box_size"], np.float32).reshape(-1, 2) / 2.0
            example["boxes"] = np.concatenate([points - half, points + half], axis=1)
        return example

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of the stored image, from its header (no pixel decoding)."""
        with Image.open(io.BytesIO(self._records[int(index)]["image"])) as image:
            return image.size[1], image.size[0]


class SyntheticSource:
    """A split of ``synthetic_crowd``, generated on demand (and cached while small)."""

    encoded = False
    has_boxes = False

    def __init__(self, options: SyntheticCrowdOptions, split: str):
        self.cache_key = (options, split)
        self._options = options
        self._split = split
        self._size = options.num_examples(split)
        self._cache = {} if self._size * options.height * options.width * 3 <= _SYNTHETIC_CACHE_BYTES else None

    def __len__(self) -> int:
        return self._size

    def read(self, index: int) -> dict:
        index = int(index)
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        example = generate_example(self._options, self._split, index)
        example["count"] = np.float32(len(example["points"]))
        if self._cache is not None:
            self._cache[index] = example
        return example

    def image_size(self, index: int) -> tuple[int, int]:
        del index  # every synthetic image has the same size
        return self._options.height, self._options.width


@functools.lru_cache(maxsize=8)
def _synthetic_source(options: SyntheticCrowdOptions, split: str) -> SyntheticSource:
    # One source per (options, split) and process, so its cache of generated images
    # survives from one epoch's pipeline to the next.
    return SyntheticSource(options, split)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _clamp_absolute_slices(split: str, builder: tfds.core.DatasetBuilder) -> str:
    """Gives absolute TFDS slices (``"train[:8]"``) Python's meaning: at most the first 8.

    TFDS rejects a slice that reaches past the end of its split; ``runlocal`` configs ask for
    ``train[:8]`` whatever the split's size, and a user's small copy may hold fewer images.
    Percent slices and plain names are left to TFDS.
    """
    parts = []
    for part in split.split("+"):
        part = part.strip()
        match = re.fullmatch(r"(\w+)\[(-?\d*):(-?\d*)\]", part)
        if match:
            base, start, stop = match.groups()
            size = builder.info.splits[base].num_examples
            first, last, _ = slice(int(start) if start else None, int(stop) if stop else None).indices(size)
            if first >= last:
                raise ValueError(
                    f"split {part!r} of {builder.name} selects no examples (the split has {size})"
                )
            part = f"{base}[{first}:{last}]"
        parts.append(part)
    return "+".join(parts)


def _check_split(name: str, split: str, known: tuple[str, ...]) -> None:
    # TFDS split expressions ("train+val", "train[:10%]") are fine; their base names must exist.
    for part in split.split("+"):
        base = re.sub(r"\[.*\]$", "", part.strip())
        if base not in known:
            raise ValueError(f"{name} has no split {base!r} (in {split!r}); splits: {', '.join(known)}")


def open_source(
    name: str,
    *,
    split: str,
    data_dir=None,
    manual_dir=None,
    synthetic=None,
    allow_build: bool = True,
):
    """Opens a split of a named data set.

    Args:
      name: a name from :data:`gcc_jax.data.catalog.DATASET_NAMES`.
      split: a split name (TFDS expressions such as ``"train+val"`` work for real data sets).
      data_dir: TFDS data directory.
      manual_dir: raw files, to build the data set on first use.
      synthetic: options for ``synthetic_crowd`` (dict or :class:`SyntheticCrowdOptions`).
      allow_build: whether a missing TFDS data set may be built here.

    Returns:
      A :class:`TfdsSource` or :class:`SyntheticSource`.
    """
    spec = get_spec(name)
    if spec.tfds_name is None:
        if split not in spec.splits:
            raise ValueError(f"{name} has no split {split!r}; splits: {', '.join(spec.splits)}")
        return _synthetic_source(SyntheticCrowdOptions.from_value(synthetic), split)
    if synthetic is not None:
        raise ValueError(f"synthetic options were given for the real data set {name!r}")
    _check_split(name, split, spec.splits)
    builder = load_builder(name, data_dir=data_dir, manual_dir=manual_dir, allow_build=allow_build)
    # A folder data set writes only the splits that received images.
    prepared = tuple(builder.info.splits)
    try:
        _check_split(name, split, prepared)
    except ValueError as error:
        raise ValueError(f"{error} (as prepared in {builder.data_dir_root})") from None
    return TfdsSource(builder, split, spec.boxes)
