"""DM-Count (Wang, Liu, Samaras, Nguyen; NeurIPS 2020) on batches of density maps.

DM-Count compares the normalised density ``Â = A / (Σ A + 1e-6)`` with the uniform measure on
the heads by entropic optimal transport, and adds a count term and a total-variation term
against the discretised ground truth. Reproduces the official code
(cvlab-stonybrook/DM-Count) number for number, quirks included:

* balanced Sinkhorn–Knopp in the scaling domain, in the dtype of the density (float32 in
  training): cells far from every head underflow to ``Kᵀu = 0`` and get a huge dual ``β``;
* the loop stops when any ``u`` or ``v`` is NaN or infinite, keeping the previous pair, or when
  ``‖Â − v ⊙ Kᵀu‖² < 1e-9`` at an iteration divisible by 10;
* the OT term is a surrogate whose *gradient* is the point (its value is round-off around 0);
  it is summed over the batch while the count and TV terms are averaged.

Two float32 details differ from PyTorch below round-off: the Gibbs kernel is applied in factored
form (see ``_SeparableKernel``), and XLA on CPU flushes denormals to zero where PyTorch keeps
them; both only touch kernel entries below ~1e-38, which vanish against the 1e-16 the
reference adds before every division.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gcc_jax.losses import _geometry

__all__ = ["DMCountHyperParameters", "batch_loss", "dm_count_loss", "dot_map"]

# Constants of the reference Sinkhorn (POT's sinkhorn_knopp ported to PyTorch).
_SINKHORN_EPS = 1e-16  # added to Kᵀu, K v and v before dividing / taking logs
_STOP_THRESHOLD = 1e-9  # on ‖b − v ⊙ Kᵀu‖²
_EVAL_EVERY = 10  # iterations between two evaluations of that error


def _check_stride(stride) -> int:
    """The stride must be a positive integer: pixels are summed into whole cells."""
    _geometry.check_positive("stride", stride)
    if float(stride) != int(stride):
        raise ValueError(f"stride must be a positive integer (pixels per cell), got {stride!r}")
    return int(stride)


def _image_dot_map(points, point_mask, *, height, width, stride):
    """Head counts per cell, ``[h, w]``, of one image's ``[M, 2]`` points."""
    # Round to the nearest pixel (half to even, like numpy) and clip into the image, as the
    # reference's gen_discrete_map does; padding rows add 0 wherever they point.
    pixels = jnp.round(jnp.where(point_mask[:, None], points, 0.0)).astype(jnp.int32)
    column = jnp.clip(pixels[:, 0], 0, width * stride - 1) // stride
    row = jnp.clip(pixels[:, 1], 0, height * stride - 1) // stride
    counts = jnp.zeros((height * width,), jnp.float32)
    counts = counts.at[row * width + column].add(point_mask.astype(jnp.float32))
    return counts.reshape(height, width)


def dot_map(
    points: jnp.ndarray, point_mask: jnp.ndarray, *, height: int, width: int, stride: int = 8
) -> jnp.ndarray:
    """Discretised ground truth ``T`` of DM-Count: the number of heads in each density cell.

    Each head ``(x, y)`` is rounded to the nearest integer pixel (half to even), clipped into
    the image of ``height·stride × width·stride`` pixels, and counted in cell
    ``(⌊y/stride⌋, ⌊x/stride⌋)``; so ``Σ T = m`` for every image.

    Args:
      points: ``[B, M, 2]`` head points ``(x, y)`` = (column, row) in input pixels, padded.
      point_mask: ``[B, M]`` boolean, ``False`` marks padding rows of ``points``.
      height: number of rows ``h`` of the density map (cells, not pixels).
      width: number of columns ``w`` of the density map (cells).
      stride: size of one cell in pixels (a positive integer).

    Returns:
      ``[B, h, w]`` float32 head counts.

    Raises:
      ValueError: on inconsistent shapes or a non-positive size or stride.
    """
    stride = _check_stride(stride)
    for name, value in (("height", height), ("width", width)):
        _geometry.check_positive(name, value)
        if float(value) != int(value):
            raise ValueError(f"{name} must be a positive integer (cells), got {value!r}")
    points_shape, mask_shape = jnp.shape(points), jnp.shape(point_mask)
    if len(points_shape) != 3 or points_shape[-1] != 2:
        raise ValueError(f"dot_map: points must have shape [B, M, 2], got shape {points_shape}")
    if mask_shape != points_shape[:2]:
        raise ValueError(
            f"dot_map: point_mask must have shape [B, M] = {points_shape[:2]}, got {mask_shape}"
        )
    return _batch_dot_maps(
        jnp.asarray(points), jnp.asarray(point_mask, bool),
        height=int(height), width=int(width), stride=stride,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("height", "width", "stride"))
def _batch_dot_maps(points, point_mask, *, height, width, stride):
    one = functools.partial(_image_dot_map, height=height, width=width, stride=stride)
    return jax.vmap(one)(points, point_mask)


class _Scaling(NamedTuple):
    """State and result of the reference Sinkhorn–Knopp loop."""

    iteration: jnp.ndarray  # the next iteration number (1-based), or the one that stopped
    u: jnp.ndarray  # [M] scaling of the points
    v: jnp.ndarray  # [n] scaling of the cells
    transported: jnp.ndarray  # [n] Kᵀu of the current u (the next step and the error need it)
    error: jnp.ndarray  # last evaluated ‖b − v ⊙ Kᵀu‖²
    diverged: jnp.ndarray  # True once a NaN or inf stopped the loop


class _SeparableKernel(NamedTuple):
    """Gibbs kernel ``K[j, i·w + k] = rows[j, i] · columns[j, k]`` of a squared-distance cost.

    ``exp(−(Δy² + Δx²)/reg)`` factors over the two axes, so ``Kᵀu`` and ``K v`` are two small
    matrix products (``[h, M] @ [M, w]`` and ``[M, h] @ [h, w]``) instead of passes over a dense
    ``[M, h·w]`` matrix: several times faster on CPU and far less memory for dense crowds.
    Versus the reference's ``exp(−fl(Δy² + Δx²)/reg)`` this only skips one rounding of the sum
    (≤ 5e-6 relative in ``K`` where it is about to underflow); cells far from every head still
    underflow to ``Kᵀu = 0`` as in the reference.
    """

    rows: jnp.ndarray  # [M, h] exp(−Δy² / reg)
    columns: jnp.ndarray  # [M, w] exp(−Δx² / reg)

    def transpose_apply(self, u):
        """``Kᵀ u``, ``[n]``, for ``u`` ``[M]``."""
        return ((self.rows * u[:, None]).T @ self.columns).reshape(-1)

    def apply(self, v):
        """``K v``, ``[M]``, for ``v`` ``[n]`` (row-major over cells)."""
        grid = v.reshape(self.rows.shape[1], self.columns.shape[1])
        return jnp.sum((self.rows @ grid) * self.columns, axis=1)


def _sinkhorn_knopp(a, b, kernel: _SeparableKernel, *, num_iters):
    """Balanced Sinkhorn–Knopp of the reference, in the scaling domain.

    Args:
      a: ``[M]`` point weights (``1/m`` for heads, 0 for padding).
      b: ``[n]`` cell weights (the normalised density).
      kernel: the Gibbs kernel ``K = exp(−C / reg)``, ``[M, n]`` in factored form.
      num_iters: iteration cap.

    Returns:
      the final :class:`_Scaling`; the plan is ``diag(u) K diag(v)``.
    """

    def keep_going(state: _Scaling):
        return (state.error > _STOP_THRESHOLD) & (state.iteration <= num_iters) & ~state.diverged

    def step(state: _Scaling):
        v = b / (state.transported + _SINKHORN_EPS)
        u = a / (kernel.apply(v) + _SINKHORN_EPS)
        transported = kernel.transpose_apply(u)
        diverged = ~(jnp.all(jnp.isfinite(u)) & jnp.all(jnp.isfinite(v)))
        # On NaN/inf the reference breaks out *before* counting or evaluating the iteration.
        u = jnp.where(diverged, state.u, u)
        v = jnp.where(diverged, state.v, v)
        transported = jnp.where(diverged, state.transported, transported)
        evaluate = (state.iteration % _EVAL_EVERY == 0) & ~diverged
        error = jnp.where(evaluate, jnp.sum((b - transported * v) ** 2), state.error)
        iteration = jnp.where(diverged, state.iteration, state.iteration + 1)
        return _Scaling(iteration, u, v, transported, error, diverged)

    num_points = jnp.maximum(jnp.sum(a > 0), 1).astype(b.dtype)
    u = jnp.where(a > 0, 1.0 / num_points, 0.0).astype(b.dtype)
    start = _Scaling(
        iteration=jnp.asarray(1, jnp.int32),
        u=u,
        v=jnp.full(b.shape, 1.0 / b.shape[0], b.dtype),
        transported=kernel.transpose_apply(u),
        error=jnp.asarray(1.0, b.dtype),
        diverged=jnp.asarray(False),
    )
    return lax.while_loop(keep_going, step, start)


def _image_ot_terms(density, points, point_mask, *, stride, reg, num_iters):
    """OT pieces of one image: surrogate, objective ⟨Â, β⟩ and Σ C ⊙ Π (all scalars)."""
    h, w = density.shape
    flat = density.reshape(h * w)
    mass = jnp.sum(flat)
    normalised = flat / (mass + 1e-6)
    # Padding rows get weight 0; zeroing their coordinates keeps garbage (inf, NaN) out of K.
    points = jnp.where(point_mask[:, None], lax.stop_gradient(points), 0.0)
    row_cost = _geometry.expanded_axis_squared_distances(points[:, 1], cells=h, stride=stride)
    column_cost = _geometry.expanded_axis_squared_distances(points[:, 0], cells=w, stride=stride)
    kernel = _SeparableKernel(jnp.exp(row_cost / -reg), jnp.exp(column_cost / -reg))
    num_points = jnp.sum(point_mask)
    a = jnp.where(point_mask, 1.0 / jnp.maximum(num_points, 1), 0.0).astype(flat.dtype)
    scaling = _sinkhorn_knopp(a, lax.stop_gradient(normalised), kernel, num_iters=num_iters)
    beta = reg * jnp.log(scaling.v + _SINKHORN_EPS)  # pixel-side dual potential, [n]
    # The reference's hand-made gradient of ⟨Â, β⟩ with respect to A, held constant.
    fixed = lax.stop_gradient(flat)
    fixed_mass = jnp.sum(fixed)
    denominator = fixed_mass * fixed_mass + 1e-8
    gradient = fixed_mass / denominator * beta - jnp.sum(fixed * beta) / denominator
    gradient = lax.stop_gradient(gradient)
    has_points = num_points > 0
    surrogate = jnp.where(has_points, jnp.sum(flat * gradient), 0.0)
    objective = jnp.where(has_points, jnp.sum(lax.stop_gradient(normalised) * beta), 0.0)
    # Σ_jik (Δy²_ji + Δx²_jk) u_j K_j,ik v_ik, one axis at a time.
    grid = scaling.v.reshape(h, w)
    row_part = jnp.sum(((kernel.rows * row_cost) @ grid) * kernel.columns, axis=1)
    column_part = jnp.sum((kernel.rows @ grid) * (kernel.columns * column_cost), axis=1)
    wasserstein = jnp.where(has_points, jnp.sum(scaling.u * (row_part + column_part)), 0.0)
    return surrogate, objective, wasserstein


@dataclasses.dataclass(frozen=True, kw_only=True)
class DMCountHyperParameters:
    """DM-Count's hyper-parameters, checked once when made (frozen and hashable: a jit static
    argument). The defaults are the official code's.

    Attributes:
      stride: size of one density cell in pixels (a positive integer).
      wot: weight of the OT term.
      wtv: weight of the TV term.
      reg: entropic regularisation of Sinkhorn, in pixels² (the cost's unit).
      num_iters: Sinkhorn iteration cap.

    Raises:
      ValueError: a hyper-parameter out of its range (the message names it).
    """

    stride: int = 8
    wot: float = 0.1
    wtv: float = 0.01
    reg: float = 10.0
    num_iters: int = 100

    def __post_init__(self):
        _geometry.check_positive("wot", self.wot, allow_zero=True)
        _geometry.check_positive("wtv", self.wtv, allow_zero=True)
        _geometry.check_positive("reg", self.reg)
        _geometry.check_positive("num_iters", self.num_iters)
        if float(self.num_iters) != int(self.num_iters):
            raise ValueError(f"num_iters must be a positive integer, got {self.num_iters!r}")
        # A frozen dataclass sets its own fields through object.__setattr__.
        object.__setattr__(self, "stride", _check_stride(self.stride))
        for name in ("wot", "wtv", "reg"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "num_iters", int(self.num_iters))

    def batch_loss(self, terms: Mapping[str, jax.Array]) -> jax.Array:
        """:func:`batch_loss` of the per-image ``terms`` with these ``wot`` and ``wtv``."""
        return batch_loss(terms, wot=self.wot, wtv=self.wtv)


@functools.partial(jax.jit, static_argnames="hyper")
def _batch_terms(density, points, point_mask, hyper: DMCountHyperParameters):
    stride = hyper.stride
    batch, h, w = density.shape
    zeros = jnp.zeros((batch,), density.dtype)
    if points.shape[1] == 0:  # no point slots: no image has an OT term
        surrogate = objective = wasserstein = zeros
    else:
        one = functools.partial(_image_ot_terms, stride=stride, reg=hyper.reg, num_iters=hyper.num_iters)
        surrogate, objective, wasserstein = jax.vmap(one)(density, points, point_mask)
    num_points = jnp.sum(point_mask, axis=1).astype(density.dtype)  # [B]
    mass = jnp.sum(density, axis=(1, 2))
    normalised = density / (mass[:, None, None] + 1e-6)
    target = _batch_dot_maps(points, point_mask, height=h, width=w, stride=stride)
    target = target.astype(density.dtype) / (num_points[:, None, None] + 1e-6)
    count = _geometry.abs_zero_subgradient(mass - num_points)
    tv = num_points * jnp.sum(_geometry.abs_zero_subgradient(normalised - target), axis=(1, 2))
    terms = {
        "ot": surrogate,
        "ot_objective": objective,
        "wasserstein": wasserstein,
        "count": count,
        "tv": tv,
        "total": hyper.wot * surrogate + count + hyper.wtv * tv,
    }
    return hyper.batch_loss(terms), terms


def batch_loss(terms: Mapping[str, jax.Array], *, wot: float, wtv: float) -> jax.Array:
    """DM-Count's batch loss from its per-image terms, as the official trainer reduces them.

    ``wot · Σ_b ot_b + mean_b count_b + wtv · mean_b tv_b``: the OT surrogate is summed over
    the batch, the count and TV terms are averaged.

    Args:
      terms: per-image ``[B]`` arrays ``ot``, ``count`` and ``tv`` (unweighted).
      wot: weight of the OT term.
      wtv: weight of the TV term.

    Returns:
      The scalar batch loss.
    """
    return wot * jnp.sum(terms["ot"]) + jnp.mean(terms["count"]) + wtv * jnp.mean(terms["tv"])


def dm_count_loss(
    density: jnp.ndarray, points: jnp.ndarray, point_mask: jnp.ndarray, **hyper_parameters
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """DM-Count loss of a batch of (un-normalised) density maps against head points.

    For one image with density ``A`` (``n = h·w`` cells centred at ``((j+½)s, (i+½)s)``),
    ``Â = A / (Σ A + 1e-6)``, ``m`` heads ``P_j`` and cost ``C_jk = ‖P_j − c_k‖²`` (pixels²),
    Sinkhorn–Knopp with ``K = exp(−C / reg)`` between ``1/m`` on the heads and ``sg(Â)`` on the
    cells (at most ``num_iters`` iterations, float quirks of the reference kept, see the module
    docstring) gives scalings ``u``, ``v``, the plan ``Π = diag(u) K diag(v)`` and the cell
    potential ``β = reg · log(v + 1e-16)``. With ``S = sg(Σ A)`` and
    ``g = sg(S β / (S² + 1e-8) − ⟨sg(A), β⟩ / (S² + 1e-8))``::

      ot           = Σ_k A_k g_k       (0 when m = 0; its gradient g is ∂⟨Â, β⟩/∂A)
      ot_objective = ⟨sg(Â), β⟩         (what the reference logs as the OT objective)
      wasserstein  = Σ_jk C_jk Π_jk
      count        = |Σ_k A_k − m|
      tv           = m · Σ_k |Â_k − T_k / (m + 1e-6)|      (T = :func:`dot_map`)
      loss = wot · Σ_b ot_b + mean_b count_b + wtv · mean_b tv_b

    The OT surrogate is summed over the batch and the other terms averaged, exactly as the
    reference reduces them. At ``|·| = 0`` the subgradient is 0, as in PyTorch.

    Args:
      density: ``[B, h, w]`` non-negative, finite, un-normalised density maps at ``stride``,
        computed in float32 (float64 stays float64); see :mod:`gcc_jax.losses` on other values.
      points: ``[B, M, 2]`` head points ``(x, y)`` = (column, row) in crop pixels, padded.
      point_mask: ``[B, M]`` boolean, ``False`` marks padding rows of ``points``.
      **hyper_parameters: the fields of :class:`DMCountHyperParameters` (``stride``, ``wot``,
        ``wtv``, ``reg``, ``num_iters``), the official code's defaults.

    Returns:
      ``(loss, terms)``: the scalar batch loss and a dict of ``[B]`` arrays ``ot`` (the
      unweighted surrogate), ``ot_objective``, ``wasserstein``, ``count``, ``tv`` (unweighted)
      and ``total = wot·ot + count + wtv·tv``, each image's loss as a batch of one. For ``B > 1``
      ``loss`` is *not* ``mean(total)``: the OT term is summed over the batch.

    Raises:
      ValueError: on inconsistent shapes, a density or points that are not real numbers, a
        point_mask that is not boolean, or invalid hyper-parameters.
      TypeError: a keyword that is not a field of :class:`DMCountHyperParameters`.

    References:
      B. Wang, H. Liu, D. Samaras, M. Hoai, "Distribution Matching for Crowd Counting",
      NeurIPS 2020; official code cvlab-stonybrook/DM-Count.
    """
    density, points, point_mask = _geometry.prepare_batch(density, points, point_mask, loss="dm_count_loss")
    return _batch_terms(density, points, point_mask, DMCountHyperParameters(**hyper_parameters))
