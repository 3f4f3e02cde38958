"""Decoded training images kept in memory from one epoch to the next, up to a byte budget.

Decoding a ShanghaiTech JPEG costs 3–6 ms on one core, more than everything else a training
example needs together (a crop is a copy of 512 × 512 pixels). A training split that fits in
memory is therefore decoded once: its images stay here, keyed by the split and the decoder
(the tf.data and Grain pipelines decode with different libraries), until the process ends or
:func:`clear` is called. Images are added in the order they are first decoded until the budget
is spent; the rest is decoded again each epoch. The cache changes no pixel, only when the
decoding happens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import numpy as np

__all__ = ["clear", "get_or_decode", "has_room", "lookup", "used_bytes"]

_lock = threading.Lock()
_images: dict[Hashable, np.ndarray] = {}
_used = 0


def get_or_decode(key: Hashable, decode: Callable[[], np.ndarray], *, max_bytes: int) -> np.ndarray:
    """The cached image of ``key``, or ``decode()``'s result (kept if it fits the budget).

    Args:
      key: identifies the image and its decoder, e.g. ``(split key, "pil", index)``.
      decode: produces the uint8 ``[H, W, 3]`` image.
      max_bytes: the cache may grow to this many bytes (all keys together); 0 disables it.

    Returns:
      The decoded image (read-only when it came from the cache).
    """
    global _used
    image = _images.get(key)
    if image is not None:
        return image
    image = decode()
    with _lock:
        if key not in _images and _used + image.nbytes <= max_bytes:
            image.flags.writeable = False  # shared between epochs and threads
            _images[key] = image
            _used += image.nbytes
    return image


def lookup(key: Hashable) -> np.ndarray | None:
    """The cached image of ``key``, or ``None``."""
    return _images.get(key)


def has_room(nbytes: int, *, max_bytes: int) -> bool:
    """Whether an image of ``nbytes`` would still be kept under a budget of ``max_bytes``."""
    return _used + nbytes <= max_bytes


def used_bytes() -> int:
    """Bytes of decoded images held now."""
    return _used


def clear() -> None:
    """Forgets every cached image."""
    global _used
    with _lock:
        _images.clear()
        _used = 0
