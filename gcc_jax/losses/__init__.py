"""Crowd-counting losses as pure JAX functions on batches of density maps and padded points.

Every loss takes ``density`` ``[B, h, w]``, ``points`` ``[B, M, 2]`` (``(x, y)`` in input
pixels) and ``point_mask`` ``[B, M]`` (``False`` = padding), and returns ``(loss, terms)``:
the batch loss reduced as the reference implementation reduces it, and a dict of per-image
``[B]`` arrays.
"""

from gcc_jax.losses._geometry import cell_positions
from gcc_jax.losses._generalized import (
    generalized_loss,
    generalized_loss_potentials,
)

__all__ = [
    "cell_positions",
    "generalized_loss",
    "generalized_loss_potentials",
]
