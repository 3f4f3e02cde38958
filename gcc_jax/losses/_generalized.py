"""The Generalized Loss (GL) of Wan, Liu and Chan (CVPR 2021).

GL compares a predicted density map with the annotated head points through an entropic
*unbalanced* optimal-transport problem whose dual potentials define a transport plan; the loss
is the OT cost plus penalties on the plan's marginals (each head should receive mass 1, each
cell should give away its density) and an entropy term.

This module reproduces the official implementation (jia-wan/GeneralizedLoss-Counting-Pytorch,
which solves the OT problem with a modified geomloss ``SamplesLoss``) number for number; see
``SPEC.md`` §1 for the exact definition, including its quirks.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from gcc_jax.losses import _geometry

__all__ = [
    "GL_COSTS",
    "exp_cost",
    "generalized_loss",
    "generalized_loss_potentials",
    "perspective_cost",
]

# log-weight the reference gives to zero-mass cells and points (geomloss ``log_weights``).
_LOG_ZERO = -100000.0
# Cap on exponents that only exceed it in degenerate cases (e.g. an all-zero density map makes
# the potentials blow up): keeps values and gradients finite where the reference gives inf/NaN.
_MAX_EXPONENT = 60.0
# Cap on the normalised diameter's floor, so that a degenerate one-cell problem stays finite.
_MIN_DIAMETER = 1e-6


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


def _distances(cells: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(_geometry.pairwise_squared_distances(cells, points))


GL_COSTS = {"exp": exp_cost, "per": perspective_cost}
CostFn = Callable[..., jnp.ndarray]
_DIVERGENCES = ("l1", "l2")
_SOLVERS = ("reference", "converged")


class _Hyper(NamedTuple):
    """Static hyper-parameters of one GL evaluation (hashable, so usable as a jit static arg)."""

    crop_size: float
    stride: float
    cost: CostFn
    scale: float
    blur: float
    reach: float
    scaling: float
    p: float
    tau: float
    d_point: str
    d_pixel: str
    solver: str
    cell_offset: str
    max_iterations: int
    threshold: float

    @property
    def eps(self) -> float:
        return self.blur**self.p

    @property
    def rho(self) -> float:
        return self.reach**self.p


def _softmin(eps, cost, log_weights, axis):
    """``−ε · log Σ exp(h − C / ε)`` reduced over ``axis`` of ``cost`` (geomloss ``softmin``)."""
    if axis == 0:
        return -eps * jax.nn.logsumexp(log_weights[:, None] - cost / eps, axis=0)
    return -eps * jax.nn.logsumexp(log_weights[None, :] - cost / eps, axis=1)


def _diameter(cells, points, point_mask):
    """Norm of the extent of the bounding box of the cells and the real points together."""
    big = jnp.finfo(points.dtype).max
    lo = jnp.minimum(cells.min(axis=0), jnp.where(point_mask[:, None], points, big).min(axis=0))
    hi = jnp.maximum(cells.max(axis=0), jnp.where(point_mask[:, None], points, -big).max(axis=0))
    return jnp.linalg.norm(hi - lo)


def _reference_potentials(log_alpha, log_beta, cost, diameter, hyper: _Hyper):
    """geomloss's ε-scaling Sinkhorn loop with symmetrised updates (SPEC §1).

    The schedule ``[D^p] + [exp(t) for t in arange(p log D, p log blur, p log scaling)] + [blur^p]``
    depends on the diameter ``D`` of the data, so its length is dynamic: the loop is a
    ``lax.while_loop`` over the schedule index (the potentials are constants for
    differentiation, so nothing needs to differentiate through the loop).

    Returns:
      ``(F, G)``: ``[n]`` potential on the cells and ``[m]`` potential on the points.
    """
    p = hyper.p
    rho = hyper.rho
    eps_final = hyper.eps
    log_d = jnp.log(jnp.maximum(diameter, _MIN_DIAMETER))
    log_step = p * math.log(hyper.scaling)
    # numpy.arange(start, stop, step) has ceil((stop - start) / step) entries.
    num_arange = jnp.maximum(jnp.ceil((p * math.log(hyper.blur) - p * log_d) / log_step), 0.0)
    num_steps = num_arange.astype(jnp.int32) + 2

    def epsilon(i):
        scheduled = jnp.exp(p * log_d + (i - 1).astype(log_d.dtype) * log_step)
        return jnp.where(i == 0, jnp.exp(p * log_d), jnp.where(i > num_arange, eps_final, scheduled))

    def dampening(eps):
        return 1.0 / (1.0 + eps / rho)

    eps0 = epsilon(jnp.int32(0))
    g = dampening(eps0) * _softmin(eps0, cost, log_alpha, axis=0)
    f = dampening(eps0) * _softmin(eps0, cost, log_beta, axis=1)

    def body(state):
        i, f, g = state
        eps = epsilon(i)
        lam = dampening(eps)
        g_new = lam * _softmin(eps, cost, log_alpha + f / eps, axis=0)
        f_new = lam * _softmin(eps, cost, log_beta + g / eps, axis=1)
        return i + 1, 0.5 * (f + f_new), 0.5 * (g + g_new)

    _, f, g = lax.while_loop(lambda s: s[0] < num_steps, body, (jnp.int32(0), f, g))
    lam = dampening(eps_final)
    g_last = lam * _softmin(eps_final, cost, log_alpha + f / eps_final, axis=0)
    f_last = lam * _softmin(eps_final, cost, log_beta + g / eps_final, axis=1)
    return f_last, g_last


def _converged_potentials(alpha, log_alpha, beta, log_beta, cost, hyper: _Hyper):
    """The same fixed point solved to convergence at ``ε = blur^p`` with ott-jax's Sinkhorn.

    ott's unbalanced problem penalises plain entropy, geomloss's KL(Π | α⊗β); passing the
    weights as ``α^(1/τ)``, ``β^(1/τ)`` with ``τ = ρ / (ρ + ε)`` makes the fixed points
    coincide. ott's plan is ``exp((f + g − C)/ε)``, so ``G = g − ε log β``; ``F`` is then taken
    from the fixed-point map ``F = τ · softmin_ε(C, log β + G/ε)``, which equals
    ``f − ε log α`` at convergence and stays finite on cells with zero density.
    """
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    eps = hyper.eps
    tau = hyper.rho / (hyper.rho + eps)
    geom = geometry.Geometry(cost_matrix=cost, epsilon=eps)
    problem = linear_problem.LinearProblem(
        geom, a=alpha ** (1.0 / tau), b=beta ** (1.0 / tau), tau_a=tau, tau_b=tau
    )
    solver = sinkhorn.Sinkhorn(
        threshold=hyper.threshold,
        max_iterations=hyper.max_iterations,
        implicit_diff=None,
    )
    out = solver(problem)
    g = jnp.where(beta > 0, out.g - eps * jnp.where(beta > 0, log_beta, 0.0), 0.0)
    f = tau * _softmin(eps, cost, log_beta + g / eps, axis=1)
    return lax.stop_gradient(f), lax.stop_gradient(g)


def _image_inputs(density, points, point_mask, hyper: _Hyper):
    """Normalised cells and points, weights, log-weights and the cost matrix of one image."""
    h, w = density.shape
    cells = _geometry.cell_positions(h, w, stride=hyper.stride, offset=hyper.cell_offset)
    cells = cells / hyper.crop_size
    # Padding rows get a harmless position so that no cost overflows.
    points = jnp.where(point_mask[:, None], points / hyper.crop_size, 0.0)
    alpha = density.reshape(-1)
    beta = point_mask.astype(alpha.dtype)
    log_alpha = jnp.where(alpha > 0, jnp.log(jnp.where(alpha > 0, alpha, 1.0)), _LOG_ZERO)
    log_beta = jnp.where(point_mask, 0.0, _LOG_ZERO).astype(alpha.dtype)
    cost = hyper.cost(cells, points, scale=hyper.scale)
    return cells, points, alpha, beta, log_alpha, log_beta, cost


def _image_potentials(density, points, point_mask, hyper: _Hyper):
    """``(F [n], G [m])`` of one image with at least one real point (constants)."""
    cells, points, alpha, beta, log_alpha, log_beta, cost = _image_inputs(
        lax.stop_gradient(density), points, point_mask, hyper
    )
    if hyper.solver == "reference":
        diameter = _diameter(cells, points, point_mask)
        f, g = _reference_potentials(log_alpha, log_beta, cost, diameter, hyper)
    else:
        f, g = _converged_potentials(alpha, log_alpha, beta, log_beta, cost, hyper)
    return lax.stop_gradient(f), lax.stop_gradient(g)


def _divergence(residual, kind):
    return jnp.abs(residual) if kind == "l1" else residual * residual


def _image_terms(density, points, point_mask, hyper: _Hyper):
    """GL terms of one image: ``ot``, ``point``, ``pixel``, ``entropy``, ``total`` (scalars)."""
    has_points = jnp.any(point_mask)
    # An image without heads takes the reference's separate branch; the OT branch is still
    # evaluated (with one fake head at the origin) so that both sides of the final `where`
    # stay finite and so do their gradients.
    solve_mask = point_mask.at[0].set(point_mask[0] | ~has_points)
    points = jnp.where(has_points, points, 0.0)
    f, g = _image_potentials(density, points, solve_mask, hyper)
    terms = _terms_given_potentials(density, points, solve_mask, f, g, hyper)
    empty = _empty_image_terms(density, hyper)
    return {name: jnp.where(has_points, terms[name], empty[name]) for name in terms}


def _terms_given_potentials(density, points, point_mask, f, g, hyper: _Hyper):
    """GL terms of one image with at least one real point, for given constant potentials.

    This is the part of GL that is differentiated: gradients reach ``density`` through ``α`` in
    the OT term, through the plan (point and entropy terms) and through the pixel term.
    """
    eps, rho = hyper.eps, hyper.rho
    _, _, alpha, beta, _, _, cost = _image_inputs(density, points, point_mask, hyper)
    ot = (rho + eps / 2.0) * (
        jnp.sum(alpha * (1.0 - jnp.exp(jnp.minimum(-f / rho, _MAX_EXPONENT))))
        + jnp.sum(jnp.where(point_mask, 1.0 - jnp.exp(jnp.minimum(-g / rho, _MAX_EXPONENT)), 0.0))
    )
    exponent = jnp.where(point_mask[None, :], (f[:, None] + g[None, :] - cost) / eps, -jnp.inf)
    plan = jnp.exp(jnp.minimum(exponent, _MAX_EXPONENT)) * alpha[:, None] * beta[None, :]
    point = jnp.sum(jnp.where(point_mask, _divergence(plan.sum(axis=0) - 1.0, hyper.d_point), 0.0))
    pixel = jnp.sum(_divergence(lax.stop_gradient(plan.sum(axis=1)) - alpha, hyper.d_pixel))
    shifted = plan + 1e-20
    entropy = jnp.sum(jnp.where(point_mask[None, :], shifted * jnp.log(shifted), 0.0)) / (
        alpha.size * jnp.sum(point_mask)
    )
    total = ot + hyper.tau * (pixel + point) + hyper.blur * entropy
    return {"ot": ot, "point": point, "pixel": pixel, "entropy": entropy, "total": total}


def _empty_image_terms(density, hyper: _Hyper):
    mass = jnp.abs(jnp.sum(density))
    terms = {"ot": mass, "point": mass, "pixel": mass, "entropy": jnp.zeros_like(mass)}
    terms["total"] = (1.0 + 2.0 * hyper.tau) * mass
    return terms


@functools.partial(jax.jit, static_argnames="hyper")
def _batch_terms(density, points, point_mask, hyper: _Hyper):
    if points.shape[1] == 0:  # no point slots at all: every image takes the empty branch
        return jax.vmap(lambda d: _empty_image_terms(d, hyper))(density)
    return jax.vmap(lambda d, x, m: _image_terms(d, x, m, hyper))(density, points, point_mask)


@functools.partial(jax.jit, static_argnames="hyper")
def _batch_potentials(density, points, point_mask, hyper: _Hyper):
    b, h, w = density.shape
    if points.shape[1] == 0:
        return jnp.zeros((b, h, w), density.dtype), jnp.zeros((b, 0), density.dtype)

    def one(d, x, m):
        f, g = _image_potentials(d, x, m, hyper)
        return f.reshape(h, w), jnp.where(m, g, 0.0)

    return jax.vmap(one)(density, points, point_mask)


def _make_hyper(
    density,
    points,
    point_mask,
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
) -> _Hyper:
    _geometry.check_batch(density, points, point_mask, loss="generalized_loss")
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
    return _Hyper(
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
    max_iterations: int = 5000,
    threshold: float = 1e-5,
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
    loss is ``(1/B) Σ_b total_b``, as the reference reduces it.

    Args:
      density: ``[B, h, w]`` non-negative density maps at ``stride``.
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
      solver: ``"reference"`` reproduces the official ε-scaling loop (about 10 symmetric
        iterations, not converged); ``"converged"`` solves the same fixed point at the final
        ``ε`` to convergence with ott-jax's unbalanced Sinkhorn.
      cell_offset: ``"reference"`` puts cell ``(i, j)`` at ``((j+1)s, (i+1)s)`` as the official
        code does; ``"centre"`` uses the true centre ``((j+½)s, (i+½)s)``.
      max_iterations: iteration cap of the ``"converged"`` solver.
      threshold: marginal-error tolerance of the ``"converged"`` solver.

    Returns:
      ``(loss, terms)``: the scalar batch loss and a dict of ``[B]`` arrays ``ot``, ``point``,
      ``pixel``, ``entropy``, ``total`` (per image, before the division by ``B``).

    Raises:
      ValueError: on inconsistent shapes or invalid hyper-parameters.

    References:
      J. Wan, Z. Liu, A. B. Chan, "A Generalized Loss Function for Crowd Counting and
      Localization", CVPR 2021; official code jia-wan/GeneralizedLoss-Counting-Pytorch.
    """
    hyper = _make_hyper(
        density, points, point_mask, crop_size=crop_size, stride=stride, cost=cost,
        scale=scale, blur=blur, reach=reach, scaling=scaling, p=p, tau=tau, d_point=d_point,
        d_pixel=d_pixel, solver=solver, cell_offset=cell_offset,
        max_iterations=max_iterations, threshold=threshold,
    )  # fmt: skip
    density = jnp.asarray(density)
    terms = _batch_terms(
        density, jnp.asarray(points, density.dtype), jnp.asarray(point_mask, bool), hyper
    )
    return jnp.mean(terms["total"]), terms


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
    max_iterations: int = 5000,
    threshold: float = 1e-5,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Dual potentials of GL's unbalanced OT problem (geomloss's convention).

    The arguments mean what they mean in :func:`generalized_loss`. With these potentials the
    transport plan is ``Π_kj = exp((F_k + G_j − C_kj)/ε) α_k β_j``.

    Returns:
      ``(F, G)``: ``F`` ``[B, h, w]`` on the cells, ``G`` ``[B, M]`` on the points (0 on padding
      rows). Both are constants for differentiation. Images without heads get ``F = 0``.
    """
    hyper = _make_hyper(
        density, points, point_mask, crop_size=crop_size, stride=stride, cost=cost,
        scale=scale, blur=blur, reach=reach, scaling=scaling, p=p, tau=0.0, d_point="l1",
        d_pixel="l2", solver=solver, cell_offset=cell_offset,
        max_iterations=max_iterations, threshold=threshold,
    )  # fmt: skip
    density = jnp.asarray(density)
    point_mask = jnp.asarray(point_mask, bool)
    f, g = _batch_potentials(density, jnp.asarray(points, density.dtype), point_mask, hyper)
    has_points = jnp.any(point_mask, axis=1)
    return jnp.where(has_points[:, None, None], f, 0.0), g
