"""Pieces of GL shared by its dense and chunked implementations: costs, hyper-parameters and
the batch reduction, normalised geometry, log-weights, the diameter and the ε-scaling schedule of the official
geomloss loop (written out in ``docs/losses.md``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Callable, Union

import jax.numpy as jnp

from gcc_jax.losses import _geometry

__all__ = [
    "GL_BATCH_REDUCTIONS",
    "GL_COSTS",
    "GLHyperParameters",
    "batch_loss",
    "diameter",
    "epsilon_schedule",
    "exp_cost",
    "image_geometry",
    "log_weights",
    "perspective_cost",
]

# log-weight the reference gives to zero-mass cells and points (geomloss ``log_weights``).
LOG_ZERO = -100000.0
# Cap on exponents that only exceed it in degenerate cases (e.g. an all-zero density map makes
# the potentials blow up): keeps values and gradients finite where the reference gives inf/NaN.
MAX_EXPONENT = 60.0
# Floor of the normalised diameter, so that a degenerate one-cell problem stays finite.
_MIN_DIAMETER = 1e-6


def _distances(cells: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(_geometry.pairwise_squared_distances(cells, points))


def exp_cost(cells: jnp.ndarray, points: jnp.ndarray, *, scale: float = 0.6) -> jnp.ndarray:
    """GL's exponential cost ``C_kj = exp(‖x_k − y_j‖ / scale) − 1``.

    Args:
      cells: ``[n, 2]`` cell positions ``(x, y)``, normalised by the crop size.
      points: ``[m, 2]`` head points ``(x, y)``, normalised by the crop size.
      scale: length scale of the cost, in normalised units.

    Returns:
      ``[n, m]`` cost matrix.
    """
    # exp(·) − 1 rather than expm1, as the reference computes it (bit-for-bit parity).
    return jnp.exp(_distances(cells, points) / scale) - 1.0


def perspective_cost(cells: jnp.ndarray, points: jnp.ndarray, *, scale: float = 0.6) -> jnp.ndarray:
    """GL's perspective-guided cost ``C_kj = exp(‖x_k − y_j‖ / σ_kj) − 1``.

    ``σ_kj = 0.5 + 0.2 · (x_k[1] + y_j[1]) / 2`` grows with the (normalised) vertical coordinate
    of both ends: heads lower in the image are nearer the camera and larger, so the same pixel
    distance costs less there.

    Args:
      cells: ``[n, 2]`` cell positions ``(x, y)``, normalised by the crop size.
      points: ``[m, 2]`` head points ``(x, y)``, normalised by the crop size.
      scale: unused (the reference's perspective cost has its own fixed scale); accepted so that
        every cost has the same signature.

    Returns:
      ``[n, m]`` cost matrix.
    """
    del scale
    sigma = 0.5 + 0.2 * (cells[:, None, 1] + points[None, :, 1]) / 2.0
    return jnp.exp(_distances(cells, points) / sigma) - 1.0


GL_COSTS = {"exp": exp_cost, "per": perspective_cost}
CostFn = Callable[..., jnp.ndarray]


_DIVERGENCES = ("l1", "l2")
_SOLVERS = ("reference", "converged")
_IMPLEMENTATIONS = ("auto", "chunked", "dense")
# How the per-image terms become the batch loss (see batch_loss).
GL_BATCH_REDUCTIONS = ("reference", "mean")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GLHyperParameters:
    """GL's hyper-parameters, checked once when made (frozen and hashable: a jit static argument).

    :func:`gcc_jax.losses.generalized_loss` and
    :func:`gcc_jax.losses.generalized_loss_potentials` take these fields as keyword arguments;
    the defaults are the official ``train.py``'s. Numbers are stored as Python floats (ints for
    ``max_iterations``) and ``cost`` as the cost function, so equal settings compare and hash
    equal however they were written.

    Attributes:
      crop_size: side ``c`` of the (square) training crop in pixels; every coordinate is divided
        by it.
      stride: size of one density cell in pixels.
      cost: ``"per"`` (perspective-guided, :func:`perspective_cost`), ``"exp"``
        (:func:`exp_cost`), or a callable ``cost(cells [n, 2], points [m, 2], *, scale)``
        returning ``[n, m]`` on normalised coordinates.
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
        not converged, and not expressible with ott-jax, see :mod:`gcc_jax.losses._generalized`);
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
        under heads, which grows without bound as the mass goes to 0 (measured in
        ``docs/losses.md``); it moves the value and the gradient of zero cells away from the
        reference's, so it is off by default.

    Raises:
      ValueError: a hyper-parameter out of its range or not one of its choices (the message
        names it).
    """

    crop_size: float
    stride: float = 8.0
    cost: Union[str, CostFn] = "per"
    scale: float = 0.6
    blur: float = 0.01
    reach: float = 0.5
    scaling: float = 0.5
    p: float = 1.0
    tau: float = 0.1
    d_point: str = "l1"
    d_pixel: str = "l2"
    solver: str = "reference"
    cell_offset: str = "reference"
    max_iterations: int = 2000
    threshold: float = 1e-4
    implementation: str = "auto"
    batch_reduction: str = "reference"
    density_floor: float = 0.0

    def __post_init__(self):
        for name in ("crop_size", "stride", "scale", "blur", "reach", "p", "threshold", "scaling"):
            _geometry.check_positive(name, getattr(self, name))
        for name in ("tau", "density_floor"):
            _geometry.check_positive(name, getattr(self, name), allow_zero=True)
        if not 0.0 < float(self.scaling) < 1.0:
            raise ValueError(f"scaling must lie strictly between 0 and 1, got {self.scaling!r}")
        if int(self.max_iterations) < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {self.max_iterations!r}")
        if isinstance(self.cost, str):
            _geometry.check_choice("cost", self.cost, GL_COSTS)
        elif not callable(self.cost):
            raise ValueError(
                f"cost must be one of {', '.join(map(repr, GL_COSTS))} or a callable "
                f"cost(cells [n, 2], points [m, 2], *, scale) -> [n, m]; got {self.cost!r}"
            )
        _geometry.check_choice("d_point", self.d_point, _DIVERGENCES)
        _geometry.check_choice("d_pixel", self.d_pixel, _DIVERGENCES)
        _geometry.check_choice("solver", self.solver, _SOLVERS)
        _geometry.check_choice("cell_offset", self.cell_offset, _geometry.CELL_OFFSETS)
        _geometry.check_choice("implementation", self.implementation, _IMPLEMENTATIONS)
        _geometry.check_choice("batch_reduction", self.batch_reduction, GL_BATCH_REDUCTIONS)
        # A frozen dataclass sets its own fields through object.__setattr__.
        for name in ("crop_size", "stride", "scale", "blur", "reach", "scaling", "p", "tau",
                     "threshold", "density_floor"):  # fmt: skip
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "max_iterations", int(self.max_iterations))
        if isinstance(self.cost, str):
            object.__setattr__(self, "cost", GL_COSTS[self.cost])

    @property
    def eps(self) -> float:
        return self.blur**self.p

    @property
    def rho(self) -> float:
        return self.reach**self.p

    def batch_loss(self, terms: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
        """:func:`batch_loss` of the per-image ``terms`` with this ``blur`` and ``batch_reduction``."""
        return batch_loss(terms, blur=self.blur, batch_reduction=self.batch_reduction)


def batch_loss(terms: Mapping[str, jnp.ndarray], *, blur: float, batch_reduction: str) -> jnp.ndarray:
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
      terms: per-image ``[B]`` arrays of :func:`gcc_jax.losses.generalized_loss` (``total``
        and ``entropy`` are read).
      blur: the entropy weight (:attr:`GLHyperParameters.blur`).
      batch_reduction: ``"reference"`` or ``"mean"``.

    Returns:
      The scalar batch loss.

    Raises:
      ValueError: an unknown ``batch_reduction``.
    """
    _geometry.check_choice("batch_reduction", batch_reduction, GL_BATCH_REDUCTIONS)
    if batch_reduction == "mean":
        return jnp.mean(terms["total"])
    entropy = blur * terms["entropy"]
    return jnp.mean(terms["total"] - entropy) + jnp.sum(entropy)


def image_geometry(height: int, width: int, points, point_mask, hyper: GLHyperParameters):
    """Normalised cell positions ``[n, 2]`` and points ``[M, 2]`` (padding rows at the origin)."""
    cells = _geometry.cell_positions(height, width, stride=hyper.stride, offset=hyper.cell_offset)
    points = jnp.where(point_mask[:, None], points / hyper.crop_size, 0.0)
    return cells / hyper.crop_size, points


def log_weights(weights):
    """``log w`` with ``log 0`` replaced by ``−100000``, as geomloss does."""
    return jnp.where(weights > 0, jnp.log(jnp.where(weights > 0, weights, 1.0)), LOG_ZERO)


def diameter(cells, points, point_mask):
    """Norm of the extent of the bounding box of the cells and the real points together."""
    big = jnp.finfo(points.dtype).max
    lo = jnp.minimum(cells.min(axis=0), jnp.where(point_mask[:, None], points, big).min(axis=0))
    hi = jnp.maximum(cells.max(axis=0), jnp.where(point_mask[:, None], points, -big).max(axis=0))
    return jnp.linalg.norm(hi - lo)


def epsilon_schedule(diameter_value, hyper: GLHyperParameters):
    """geomloss's ε-scaling schedule for a diameter ``D``.

    ``E = [D^p] + [exp(t) for t in arange(p log D, p log blur, p log scaling)] + [blur^p]``.
    Its length depends on the data, so it is returned as a dynamic step count and a function of
    the step index (the loops that use it are ``lax.while_loop``s).

    Returns:
      ``(num_steps, epsilon)``: int32 scalar ``len(E)`` and ``epsilon(i) = E[i]``.
    """
    p = hyper.p
    log_d = jnp.log(jnp.maximum(diameter_value, _MIN_DIAMETER))
    log_step = p * math.log(hyper.scaling)
    # numpy.arange(start, stop, step) has ceil((stop - start) / step) entries.
    num_arange = jnp.maximum(jnp.ceil((p * math.log(hyper.blur) - p * log_d) / log_step), 0.0)

    def epsilon(i):
        scheduled = jnp.exp(p * log_d + (i - 1).astype(log_d.dtype) * log_step)
        return jnp.where(
            i == 0, jnp.exp(p * log_d), jnp.where(i > num_arange, hyper.eps, scheduled)
        )

    return num_arange.astype(jnp.int32) + 2, epsilon


def dampening(eps, hyper: GLHyperParameters):
    """geomloss's ``λ = 1 / (1 + ε/ρ)``, the unbalanced update's shrinkage."""
    return 1.0 / (1.0 + eps / hyper.rho)
