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
import inspect
from collections.abc import Mapping
from typing import Any, Union

import jax
import jax.numpy as jnp

from gcc_jax.losses import _geometry
from gcc_jax.losses import _generalized_chunked as chunked
from gcc_jax.losses import _generalized_dense as dense
from gcc_jax.losses._generalized_common import GL_COSTS, CostFn, Hyper, exp_cost, perspective_cost

__all__ = [
    "GL_BATCH_REDUCTIONS",
    "GL_COSTS",
    "batch_loss",
    "exp_cost",
    "generalized_loss",
    "generalized_loss_potentials",
    "perspective_cost",
]

_DIVERGENCES = ("l1", "l2")
_SOLVERS = ("reference", "converged")
_IMPLEMENTATIONS = ("auto", "chunked", "dense")
# How the per-image terms become the batch loss (see batch_loss).
GL_BATCH_REDUCTIONS = ("reference", "mean")


def _use_chunked(hyper: Hyper) -> bool:
    if hyper.implementation == "auto":
        return jax.default_backend() == "cpu"
    return hyper.implementation == "chunked"


def _potentials(density, points, point_mask, hyper: Hyper):
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
def _batch_terms(density, points, point_mask, hyper: Hyper):
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
def _batch_potentials(density, points, point_mask, hyper: Hyper):
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
    _geometry.check_positive("density_floor", floor, allow_zero=True)
    # max(·) exactly in value (density − sg(density) is exactly 0), derivative 1 everywhere.
    sg = jax.lax.stop_gradient
    return sg(jnp.maximum(density, floor)) + (density - sg(density))


def _make_hyper(
    *,
    crop_size,
    stride,
    cost,
    scale,
    blur,
    reach,
    scaling,
    p,
    tau,
    d_point,
    d_pixel,
    solver,
    cell_offset,
    max_iterations,
    threshold,
    implementation,
) -> Hyper:
    for name, value in (
        ("crop_size", crop_size),
        ("stride", stride),
        ("scale", scale),
        ("blur", blur),
        ("reach", reach),
        ("p", p),
        ("threshold", threshold),
    ):
        _geometry.check_positive(name, value)
    _geometry.check_positive("tau", tau, allow_zero=True)
    _geometry.check_positive("scaling", scaling)
    if not 0.0 < float(scaling) < 1.0:
        raise ValueError(f"scaling must lie strictly between 0 and 1, got {scaling!r}")
    if int(max_iterations) < 1:
        raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
    if isinstance(cost, str):
        _geometry.check_choice("cost", cost, GL_COSTS)
        cost = GL_COSTS[cost]
    elif not callable(cost):
        raise ValueError(
            f"cost must be one of {', '.join(map(repr, GL_COSTS))} or a callable "
            f"cost(cells [n, 2], points [m, 2], *, scale) -> [n, m]; got {cost!r}"
        )
    _geometry.check_choice("d_point", d_point, _DIVERGENCES)
    _geometry.check_choice("d_pixel", d_pixel, _DIVERGENCES)
    _geometry.check_choice("solver", solver, _SOLVERS)
    _geometry.check_choice("cell_offset", cell_offset, _geometry.CELL_OFFSETS)
    _geometry.check_choice("implementation", implementation, _IMPLEMENTATIONS)
    return Hyper(
        crop_size=float(crop_size),
        stride=float(stride),
        cost=cost,
        scale=float(scale),
        blur=float(blur),
        reach=float(reach),
        scaling=float(scaling),
        p=float(p),
        tau=float(tau),
        d_point=d_point,
        d_pixel=d_pixel,
        solver=solver,
        cell_offset=cell_offset,
        max_iterations=int(max_iterations),
        threshold=float(threshold),
        implementation=implementation,
    )


def generalized_loss(
    density: jnp.ndarray,
    points: jnp.ndarray,
    point_mask: jnp.ndarray,
    *,
    crop_size: float,
    stride: float = 8,
    cost: Union[str, CostFn] = "per",
    scale: float = 0.6,
    blur: float = 0.01,
    reach: float = 0.5,
    scaling: float = 0.5,
    p: float = 1.0,
    tau: float = 0.1,
    d_point: str = "l1",
    d_pixel: str = "l2",
    solver: str = "reference",
    cell_offset: str = "reference",
    max_iterations: int = 2000,
    threshold: float = 1e-4,
    implementation: str = "auto",
    batch_reduction: str = "reference",
    density_floor: float = 0.0,
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
      crop_size: side ``c`` of the (square) training crop in pixels; every coordinate is divided
        by it.
      stride: size of one density cell in pixels.
      cost: ``"per"`` (perspective-guided, :func:`perspective_cost`), ``"exp"``
        (:func:`exp_cost`), or a callable ``cost(cells [n, 2], points [m, 2], *, scale)`` returning
        ``[n, m]`` on normalised coordinates.
      scale: length scale of the ``"exp"`` cost (normalised units).
      blur: ``ε^(1/p)``, the final entropic blur; also the weight of the entropy term.
      reach: ``ρ^(1/p)``, the strength of the marginal (KL) penalties.
      scaling: ratio between consecutive ``ε`` of the annealing schedule, in ``(0, 1)``.
      p: exponent of geomloss's ``blur``/``reach`` parameterisation.
      tau: weight of the point and pixel terms.
      d_point: ``"l1"`` or ``"l2"``, divergence of the point term.
      d_pixel: ``"l1"`` or ``"l2"``, divergence of the pixel term.
      solver: ``"reference"``, a port of the official geomloss ε-scaling loop (about 10
        symmetric, averaged iterations with a per-blur damping and a final extrapolation step;
        not converged, and not expressible with ott-jax, see the module docstring);
        ``"converged"`` solves the same fixed point at the final ``ε`` to convergence with
        ott-jax's unbalanced ``Sinkhorn`` (``max_iterations``, ``threshold``).
      cell_offset: ``"reference"`` puts cell ``(i, j)`` at ``((j+1)s, (i+1)s)`` as the official
        code does; ``"centre"`` uses the true centre ``((j+½)s, (i+½)s)``.
      max_iterations: iteration cap of the ``"converged"`` solver.
      threshold: marginal-error tolerance of the ``"converged"`` solver (ott's criterion,
        checked every 10 iterations). In float32 the error floors near 1e-5, so a much smaller
        value only runs into ``max_iterations``; 1e-4 gives potentials within ~1e-6 of a float64
        solve (measured on the reference fixtures).
      implementation: how the work is laid out, never what is computed: ``"chunked"`` (one
        image at a time, real points only, one ``exp`` per matrix entry and a hand-written
        gradient; fastest on CPUs), ``"dense"`` (full padded matrices vmapped over the batch,
        JAX autodiff; suits GPUs and TPUs), or ``"auto"`` (chunked on CPU, dense elsewhere).
        Both agree to float32 round-off; the chunked one is differentiable in reverse mode only.
      batch_reduction: ``"reference"`` (the official trainer's: the entropy terms summed over
        the batch, the others averaged) or ``"mean"`` (every image's total averaged); see
        :func:`batch_loss`. Equal at batch 1.
      density_floor: cells below it enter the loss at this value, with their gradient passed
        through unchanged. The default 0 changes nothing on a non-negative map and turns the
        NaN that negative cells give (the reference takes their logarithm) into the loss of a
        zero cell. A small positive floor bounds the gradient of a map with almost no mass
        under heads, which grows without bound as the mass goes to 0 (an all-zero 8×8 map with
        two heads: gradient ~8e25 at floor 0, 1.5e2 at 1e-6, 17 at 1e-4); it moves the value
        and the gradient of zero cells away from the reference's, so it is off by default.

    Returns:
      ``(loss, terms)``: the scalar batch loss and a dict of ``[B]`` arrays ``ot``, ``point``,
      ``pixel``, ``entropy``, ``total`` (per image, before any division by ``B``).

    Raises:
      ValueError: on inconsistent shapes, a density or points that are not real numbers, a
        point_mask that is not boolean, or invalid hyper-parameters.

    References:
      J. Wan, Z. Liu, A. B. Chan, "A Generalized Loss Function for Crowd Counting and
      Localization", CVPR 2021; official code jia-wan/GeneralizedLoss-Counting-Pytorch.
    """
    density, points, point_mask = _geometry.prepare_batch(
        density, points, point_mask, loss="generalized_loss"
    )
    hyper = _make_hyper(
        crop_size=crop_size, stride=stride, cost=cost,
        scale=scale, blur=blur, reach=reach, scaling=scaling, p=p, tau=tau, d_point=d_point,
        d_pixel=d_pixel, solver=solver, cell_offset=cell_offset,
        max_iterations=max_iterations, threshold=threshold, implementation=implementation,
    )  # fmt: skip
    _geometry.check_choice("batch_reduction", batch_reduction, GL_BATCH_REDUCTIONS)
    terms = _batch_terms(_floored(density, density_floor), points, point_mask, hyper)
    return batch_loss(terms, {"blur": hyper.blur, "batch_reduction": batch_reduction}), terms


def batch_loss(terms: Mapping[str, jax.Array], options: Mapping[str, Any]) -> jax.Array:
    """GL's batch loss from its per-image terms.

    ``batch_reduction="reference"`` reduces the batch as the official trainer does (its
    ``utils/emd_dot_trainer.py`` divides each image's OT, point and pixel terms by the batch
    size ``B`` but adds each image's entropy term undivided)::

      loss = (1/B) Σ_b (ot_b + tau · (pixel_b + point_b)) + blur · Σ_b entropy_b

    ``"mean"`` is the plain mean of the per-image totals, ``(1/B) Σ_b total_b``: every term
    weighted alike, so the loss does not depend on how images are grouped into batches. The
    two agree at ``B = 1`` (the official setting); at ``B > 1`` the reference weights the
    entropy ``B`` times more than the mean does.

    Args:
      terms: per-image ``[B]`` arrays of :func:`generalized_loss` (``total`` and ``entropy``
        are read).
      options: the keyword options of :func:`generalized_loss`; ``blur`` (the entropy weight)
        and ``batch_reduction`` are read, with :func:`generalized_loss`'s defaults when absent.

    Returns:
      The scalar batch loss.

    Raises:
      ValueError: an unknown ``batch_reduction``.
    """
    reduction = options.get("batch_reduction", _DEFAULTS["batch_reduction"])
    _geometry.check_choice("batch_reduction", reduction, GL_BATCH_REDUCTIONS)
    if reduction == "mean":
        return jnp.mean(terms["total"])
    entropy = options.get("blur", _DEFAULTS["blur"]) * terms["entropy"]
    return jnp.mean(terms["total"] - entropy) + jnp.sum(entropy)


# generalized_loss's keyword defaults, for a reduction called with part of its options.
_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(generalized_loss).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def generalized_loss_potentials(
    density: jnp.ndarray,
    points: jnp.ndarray,
    point_mask: jnp.ndarray,
    *,
    crop_size: float,
    stride: float = 8,
    cost: Union[str, CostFn] = "per",
    scale: float = 0.6,
    blur: float = 0.01,
    reach: float = 0.5,
    scaling: float = 0.5,
    p: float = 1.0,
    solver: str = "reference",
    cell_offset: str = "reference",
    max_iterations: int = 2000,
    threshold: float = 1e-4,
    implementation: str = "auto",
    density_floor: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Dual potentials of GL's unbalanced OT problem (geomloss's convention).

    The arguments mean what they mean in :func:`generalized_loss`. With these potentials the
    transport plan is ``Π_kj = exp((F_k + G_j − C_kj)/ε) α_k β_j``.

    Returns:
      ``(F, G)``: ``F`` ``[B, h, w]`` on the cells, ``G`` ``[B, M]`` on the points (0 on padding
      rows). Both are constants for differentiation. Images without heads get ``F = 0``.
    """
    density, points, point_mask = _geometry.prepare_batch(
        density, points, point_mask, loss="generalized_loss_potentials"
    )
    hyper = _make_hyper(
        crop_size=crop_size, stride=stride, cost=cost,
        scale=scale, blur=blur, reach=reach, scaling=scaling, p=p, tau=0.0, d_point="l1",
        d_pixel="l2", solver=solver, cell_offset=cell_offset,
        max_iterations=max_iterations, threshold=threshold, implementation=implementation,
    )  # fmt: skip
    return _batch_potentials(_floored(density, density_floor), points, point_mask, hyper)
