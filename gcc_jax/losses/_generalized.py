"""The Generalized Loss (GL) of Wan, Liu and Chan (CVPR 2021).

GL compares a predicted density map with the annotated head points through an entropic
*unbalanced* optimal-transport problem whose dual potentials define a transport plan; the loss
is the OT cost plus penalties on the plan's marginals (each head should receive mass 1, each
cell should give away its density) and an entropy term.

This module reproduces the official implementation (jia-wan/GeneralizedLoss-Counting-Pytorch,
which solves the OT problem with a modified geomloss ``SamplesLoss``) number for number. Two
solvers give the dual potentials:

* ``solver="reference"`` (default) is a port of the official loop: geomloss's ε-scaling
  Sinkhorn with symmetric, averaged updates, about 10 steps at the defaults, not converged.
  ott-jax cannot reproduce it: the loop recomputes its damping ``1 / (1 + e/ρ)`` at every
  blur ``e`` of the schedule, averages old and new potentials, and ends with an un-averaged
  extrapolation step at the final blur, while ott's ``Sinkhorn`` iterates one fixed-point map
  whose damping is set by the target ``ε``. The loop is written out here, in a dense and a
  chunked layout (``_generalized_dense``, ``_generalized_chunked``).
* ``solver="converged"`` solves the same fixed point at the final ``ε`` to convergence with
  ott-jax's unbalanced ``Sinkhorn``.

``docs/losses.md`` gives the whole computation, the schedule and the official code's quirks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gcc_jax.losses import _geometry
from gcc_jax.losses import _generalized_chunked as chunked
from gcc_jax.losses import _generalized_dense as dense
from gcc_jax.losses._generalized_common import (
    GL_BATCH_REDUCTIONS,
    GL_COSTS,
    GLHyperParameters,
    batch_loss,
    exp_cost,
    perspective_cost,
)

__all__ = [
    "GL_BATCH_REDUCTIONS",
    "GL_COSTS",
    "GLHyperParameters",
    "batch_loss",
    "exp_cost",
    "generalized_loss",
    "generalized_loss_potentials",
    "perspective_cost",
]

def _use_chunked(hyper: GLHyperParameters) -> bool:
    if hyper.implementation == "auto":
        return jax.default_backend() == "cpu"
    return hyper.implementation == "chunked"


def _potentials(density, points, point_mask, hyper: GLHyperParameters):
    """``(F [B, n], G [B, M])`` of images that all have at least one real point."""
    density = jax.lax.stop_gradient(density)
    if hyper.solver == "converged":
        return dense.converged_potentials(density, points, point_mask, hyper)
    if _use_chunked(hyper):
        return chunked.chunked_potentials(density, points, point_mask, hyper)
    return dense.dense_potentials(density, points, point_mask, hyper)


def _with_a_point_everywhere(points, point_mask):
    """Gives every image without heads one fake head at the origin.

    Such images take the reference's separate branch; the OT branch is still evaluated for them
    so that both sides of the final ``where`` (and their gradients) stay finite.
    """
    has_points = jnp.any(point_mask, axis=1)
    solve_mask = point_mask.at[:, 0].set(point_mask[:, 0] | ~has_points)
    return jnp.where(has_points[:, None, None], points, 0.0), solve_mask, has_points


@functools.partial(jax.jit, static_argnames="hyper")
def _batch_terms(density, points, point_mask, hyper: GLHyperParameters):
    # |Σ A| with PyTorch's zero subgradient at 0 (an all-zero map of an empty crop).
    mass = _geometry.abs_zero_subgradient(jnp.sum(density, axis=(1, 2)))
    empty = {"ot": mass, "point": mass, "pixel": mass, "entropy": jnp.zeros_like(mass)}
    if points.shape[1] == 0:  # no point slots at all: every image takes the empty branch
        terms = empty
    else:
        points, solve_mask, has_points = _with_a_point_everywhere(points, point_mask)
        f, g = _potentials(density, points, solve_mask, hyper)
        image_terms = chunked.chunked_terms if _use_chunked(hyper) else dense.dense_terms
        stacked = image_terms(density, points, solve_mask, f, g, hyper)
        terms = {
            name: jnp.where(has_points, stacked[:, i], empty[name])
            for i, name in enumerate(("ot", "point", "pixel", "entropy"))
        }
    terms["total"] = (
        terms["ot"] + hyper.tau * (terms["pixel"] + terms["point"]) + hyper.blur * terms["entropy"]
    )
    return terms


@functools.partial(jax.jit, static_argnames="hyper")
def _batch_potentials(density, points, point_mask, hyper: GLHyperParameters):
    b, h, w = density.shape
    if points.shape[1] == 0:
        return jnp.zeros((b, h, w), density.dtype), jnp.zeros((b, 0), density.dtype)
    points, solve_mask, has_points = _with_a_point_everywhere(points, point_mask)
    f, g = _potentials(density, points, solve_mask, hyper)
    f = jnp.where(has_points[:, None], f, 0.0).reshape(b, h, w)
    return f, jnp.where(point_mask, g, 0.0)


def _floored(density, floor):
    """``max(density, floor)`` in value, with the gradient of ``density`` (straight through).

    The reference takes logarithms of the cell masses: a negative cell makes the entropy term
    NaN, and a map whose total mass goes to 0 under heads drives the point potentials to
    infinity, the gradient growing roughly like ``mass^(-1/2)``. Raising the value to the floor
    keeps both finite; passing the gradient through unchanged lets a cell below the floor still
    learn (a plain ``maximum`` would give it zero gradient, so an all-zero model would stay
    all-zero). With ``floor = 0`` a non-negative map is unchanged bit for bit.
    """
    # max(·) exactly in value (density − sg(density) is exactly 0), derivative 1 everywhere.
    sg = jax.lax.stop_gradient
    return sg(jnp.maximum(density, floor)) + (density - sg(density))


def generalized_loss(
    density: jnp.ndarray, points: jnp.ndarray, point_mask: jnp.ndarray, **hyper_parameters
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Generalized Loss (GL) of a batch of density maps against head points.

    For one image with density ``A`` (``n = h·w`` cells at normalised positions ``x_k``) and
    ``m`` heads at normalised positions ``y_j`` (pixels divided by ``crop_size``), with
    ``α = A``, ``β = 1``, ``ε = blur^p`` and ``ρ = reach^p``, the entropic unbalanced OT problem
    between ``α`` and ``β`` with cost ``C`` gives dual potentials ``F`` (cells) and ``G``
    (points), held constant for differentiation, and the plan
    ``Π_kj = exp((F_k + G_j − C_kj)/ε) α_k β_j``. Then::

      ot      = (ρ + ε/2) [Σ_k α_k (1 − e^{−F_k/ρ}) + Σ_j β_j (1 − e^{−G_j/ρ})]
      point   = Σ_j d_point(Σ_k Π_kj − 1)
      pixel   = Σ_k d_pixel(sg(Σ_j Π_kj) − α_k)                 (sg = stop-gradient)
      entropy = mean_kj (Π_kj + 1e-20) log(Π_kj + 1e-20)
      total   = ot + tau · (pixel + point) + blur · entropy

    An image without heads has ``ot = point = pixel = |Σ_k A_k|`` and ``entropy = 0``. The batch
    loss is, by default, the official trainer's
    ``(1/B) Σ_b (ot + tau · (pixel + point))_b + blur · Σ_b entropy_b`` (the entropy term of
    each image is not divided by ``B``); ``batch_reduction="mean"`` gives ``(1/B) Σ_b total_b``
    (:func:`batch_loss`).

    Args:
      density: ``[B, h, w]`` non-negative, finite density maps at ``stride``, computed in
        float32 (float64 stays float64); see :mod:`gcc_jax.losses` and ``density_floor``.
      points: ``[B, M, 2]`` head points ``(x, y)`` = (column, row) in crop pixels, padded.
      point_mask: ``[B, M]`` boolean, ``False`` marks padding rows of ``points``.
      **hyper_parameters: the fields of :class:`GLHyperParameters`, keyword by keyword:
        ``crop_size`` (required), ``stride``, ``cost``, ``scale``, ``blur``, ``reach``,
        ``scaling``, ``p``, ``tau``, ``d_point``, ``d_pixel``, ``solver``, ``cell_offset``,
        ``max_iterations``, ``threshold``, ``implementation``, ``batch_reduction``,
        ``density_floor``; its docstring says what each means, its defaults are the official
        ``train.py``'s.

    Returns:
      ``(loss, terms)``: the scalar batch loss and a dict of ``[B]`` arrays ``ot``, ``point``,
      ``pixel``, ``entropy``, ``total`` (per image, before any division by ``B``).

    Raises:
      ValueError: on inconsistent shapes, a density or points that are not real numbers, a
        point_mask that is not boolean, or invalid hyper-parameters.
      TypeError: a keyword that is not a field of :class:`GLHyperParameters`, or no
        ``crop_size``.

    References:
      J. Wan, Z. Liu, A. B. Chan, "A Generalized Loss Function for Crowd Counting and
      Localization", CVPR 2021; official code jia-wan/GeneralizedLoss-Counting-Pytorch.
    """
    density, points, point_mask = _geometry.prepare_batch(
        density, points, point_mask, loss="generalized_loss"
    )
    hyper = GLHyperParameters(**hyper_parameters)
    terms = _batch_terms(_floored(density, hyper.density_floor), points, point_mask, hyper)
    return hyper.batch_loss(terms), terms


# Hyper-parameters of GL's loss value (term weights, divergences, batch reduction) that the
# potentials do not depend on: generalized_loss_potentials refuses them instead of ignoring them.
_LOSS_VALUE_ONLY = ("tau", "d_point", "d_pixel", "batch_reduction")


def generalized_loss_potentials(
    density: jnp.ndarray, points: jnp.ndarray, point_mask: jnp.ndarray, **hyper_parameters
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Dual potentials of GL's unbalanced OT problem (geomloss's convention).

    The arguments mean what they mean in :func:`generalized_loss`, except the hyper-parameters
    of the loss value that do not enter the potentials (``tau``, ``d_point``, ``d_pixel``,
    ``batch_reduction``): they are refused rather than ignored. With these potentials the
    transport plan is ``Π_kj = exp((F_k + G_j − C_kj)/ε) α_k β_j``.

    Returns:
      ``(F, G)``: ``F`` ``[B, h, w]`` on the cells, ``G`` ``[B, M]`` on the points (0 on padding
      rows). Both are constants for differentiation. Images without heads get ``F = 0``.

    Raises:
      ValueError: bad inputs or hyper-parameters (as :func:`generalized_loss`), or one of the
        loss-value hyper-parameters above (the message names them).
    """
    refused = sorted(set(hyper_parameters) & set(_LOSS_VALUE_ONLY))
    if refused:
        raise ValueError(
            f"generalized_loss_potentials takes no {', '.join(refused)}: they weight or reduce the loss "
            "terms and do not enter the potentials"
        )
    density, points, point_mask = _geometry.prepare_batch(
        density, points, point_mask, loss="generalized_loss_potentials"
    )
    hyper = GLHyperParameters(**hyper_parameters)
    return _batch_potentials(_floored(density, hyper.density_floor), points, point_mask, hyper)
