"""Crowd-counting losses as pure JAX functions on batches of density maps and padded points.

Every loss takes ``density`` ``[B, h, w]``, ``points`` ``[B, M, 2]`` (``(x, y)`` in input
pixels) and ``point_mask`` ``[B, M]`` (``False`` = padding), and returns ``(loss, terms)``:
the batch loss reduced as the reference implementation reduces it, and a dict of per-image
``[B]`` arrays. Each loss's keyword hyper-parameters are the fields of one frozen, checked object
(:class:`GLHyperParameters`, :class:`BLHyperParameters`, :class:`DMCountHyperParameters`,
:class:`L2HyperParameters`), whose ``batch_loss(terms)`` is the loss's batch reduction.
:data:`LOSSES` names the losses for training programs (batch entries, hyper-parameters).
``docs/losses.md`` writes out the math.

Shapes and dtypes are checked (``ValueError`` naming the argument); the losses compute in
float32 whatever floating-point or integer density comes in (``float16`` / ``bfloat16`` maps
from a mixed-precision model are cast up, ``float64`` is kept), with a boolean ``point_mask``.

Values cannot be checked inside ``jit``, so they are a contract:

* **The density is non-negative**, as every reference model's output is (ReLU or ``abs``).
  BL and L2 compute finite values from negative cells, and GL raises them to its
  ``density_floor`` (0 by default) instead of taking the logarithm of a negative mass;
  DM-Count's Sinkhorn scales by the normalised map and gives NaN, as its reference does.
* **The density is finite.** A NaN or inf in one cell makes that image's terms, the batch
  loss and the whole gradient NaN; no loss can tell which cell it was. Find the cause rather
  than hiding it (``jnp.nan_to_num`` would train on a model that has already diverged): check
  ``jnp.isfinite(density).all(axis=(1, 2))`` before the loss to name the images, or run with
  ``jax.config.update("jax_debug_nans", True)`` to stop at the operation that made the NaN.
  The training program stops with a message at the first non-finite metric.
"""

from gcc_jax.losses._bayesian import BLHyperParameters, bayesian_loss
from gcc_jax.losses._dm_count import DMCountHyperParameters, dm_count_loss, dot_map
from gcc_jax.losses._geometry import cell_positions
from gcc_jax.losses._generalized import (
    GL_COSTS,
    GLHyperParameters,
    exp_cost,
    generalized_loss,
    generalized_loss_potentials,
    perspective_cost,
)
from gcc_jax.losses._pixel import L2HyperParameters, gaussian_density, l2_loss
from gcc_jax.losses._registry import LOSS_NAMES, LOSSES, RegisteredLoss, get_loss

__all__ = [
    "BLHyperParameters",
    "DMCountHyperParameters",
    "GLHyperParameters",
    "GL_COSTS",
    "L2HyperParameters",
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
