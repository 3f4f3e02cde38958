"""The per-split cache of training annotations: a record is read once per split, and only the
splits read most recently are kept."""

import collections

import numpy as np

from gcc_jax.data import examples


class _CountingSource:
    """A source of uint8 images that counts its reads."""

    encoded = False

    def __init__(self, key):
        self.cache_key = key
        self.reads = 0

    def read(self, index):
        self.reads += 1
        points = np.asarray([[1.0, 2.0], [5.0, 3.0], [6.0, 7.0]], np.float32) + index
        return {"points": points, "filename": f"{index}.png", "image": np.zeros((8, 12, 3), np.uint8)}


def test_a_record_is_read_once_and_old_splits_are_let_go(monkeypatch):
    monkeypatch.setattr(examples, "_annotations", collections.OrderedDict())
    first, second, third = (_CountingSource(("split", n)) for n in range(3))
    points, _, filename, image_hw, image = examples._train_annotations(first, 1)
    assert filename == "1.png" and image_hw == (8, 12) and image is not None
    again = examples._train_annotations(first, 1)
    assert first.reads == 1 and again[4] is None  # from the cache: no image read
    np.testing.assert_array_equal(again[0], points)
    examples._train_annotations(second, 0)
    examples._train_annotations(third, 0)
    assert list(examples._annotations) == [second.cache_key, third.cache_key]
    examples._train_annotations(first, 1)  # forgotten: read again
    assert first.reads == 2 and len(examples._annotations) == examples._MAX_CACHED_SPLITS
