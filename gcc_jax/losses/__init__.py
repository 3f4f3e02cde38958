"""Crowd-counting losses as pure JAX functions on batches of density maps and padded points.

Every loss takes ``density`` ``[B, h, w]``, ``points`` ``[B, M, 2]`` (``(x, y)`` in input
pixels) and ``point_mask`` ``[B, M]`` (``False`` = padding), and returns ``(loss, terms)``:
the batch loss reduced as the reference implementation reduces it, and a dict of per-image
``[B]`` arrays. :data:`LOSSES` names them for training programs (batch entries, batch
reduction, the network head of each official code). ``docs/losses.md`` writes out the math.
"""

from gcc_jax.losses._bayesian import bayesian_loss
from gcc_jax.losses._dm_count import dm_count_loss, dot_map
from gcc_jax.losses._geometry import cell_positions
from gcc_jax.losses._generalized import (
    GL_COSTS,
    exp_cost,
    generalized_loss,
    generalized_loss_potentials,
    perspective_cost,
)
from gcc_jax.losses._pixel import gaussian_density, l2_loss
from gcc_jax.losses._registry import LOSS_NAMES, LOSSES, RegisteredLoss, get_loss

__all__ = [
    "GL_COSTS",
    "LOSSES",
    "LOSS_NAMES",
    "RegisteredLoss",
    "bayesian_loss",
    "cell_positions",
    "dm_count_loss",
    "dot_map",
    "exp_cost",
    "gaussian_density",
    "generalized_loss",
    "generalized_loss_potentials",
    "get_loss",
    "l2_loss",
    "perspective_cost",
]
