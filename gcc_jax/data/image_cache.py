"""Decoded training images kept in memory from one epoch to the next, up to a byte budget.

Decoding a ShanghaiTech JPEG costs 3–6 ms on one core, more than everything else a training
example needs together (a crop is a copy of 512 × 512 pixels). A training split that fits in
memory is therefore decoded once: its images stay here, keyed by the split and the decoder
(the tf.data and Grain pipelines decode with different libraries), until the process ends or
:func:`clear` is called. Images are added in the order they are first decoded until the budget
is spent; the rest is decoded again each epoch. The cache changes no pixel, only when the
decoding happens.

Two ways to fill it: :func:`get_or_decode` decodes in the caller's thread (the Grain pipeline's
workers); :func:`reserve` books the room for an image that another thread will decode and
:func:`fill` in later (the tf.data pipeline decodes inside its parallel map), and
:func:`release` gives back what was booked but never filled (an epoch abandoned midway).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import numpy as np

__all__ = ["clear", "fill", "get_or_decode", "lookup", "release", "reserve", "used_bytes"]

_lock = threading.Lock()
_images: dict[Hashable, np.ndarray] = {}
_reserved: dict[Hashable, int] = {}  # key -> bytes booked for an image not yet filled in
_used = 0  # bytes of the images held and of the reservations


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
        if key not in _images and key not in _reserved and _used + image.nbytes <= max_bytes:
            image.flags.writeable = False  # shared between epochs and threads
            _images[key] = image
            _used += image.nbytes
    return image


def reserve(key: Hashable, nbytes: int, *, max_bytes: int) -> bool:
    """Books ``nbytes`` of the budget for ``key``'s image, to be handed over by :func:`fill`.

    Returns:
      False (nothing booked) when the image is held or booked already, or would not fit.
    """
    global _used
    with _lock:
        if key in _images or key in _reserved or _used + nbytes > max_bytes:
            return False
        _reserved[key] = nbytes
        _used += nbytes
        return True


def fill(key: Hashable, image: np.ndarray) -> None:
    """Keeps ``image`` (uint8 ``[H, W, 3]``) for ``key`` if its room is still booked; else
    (released or cleared meanwhile) does nothing."""
    global _used
    with _lock:
        nbytes = _reserved.pop(key, None)
        if nbytes is not None:
            image.flags.writeable = False
            _images[key] = image
            _used += image.nbytes - nbytes


def release(keys) -> None:
    """Gives back the room booked for those of ``keys`` not filled in (the others are kept)."""
    global _used
    with _lock:
        for key in keys:
            _used -= _reserved.pop(key, 0)


def lookup(key: Hashable) -> np.ndarray | None:
    """The cached image of ``key``, or ``None``."""
    return _images.get(key)


def used_bytes() -> int:
    """Bytes of decoded images held now."""
    return _used


def clear() -> None:
    """Forgets every cached image."""
    global _used
    with _lock:
        _images.clear()
        _reserved.clear()
        _used = 0
