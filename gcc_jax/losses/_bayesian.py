"""Bayesian Loss (BL) of Ma, Wei, Hong and Gong (ICCV 2019) on batches of density maps.

Each head point ``j`` owns a Gaussian likelihood over the density cells; Bayes' rule turns the
likelihoods into a posterior ``p(j | cell k)`` (optionally with a background "point" that owns
cells far from every head), and the loss asks the expected count of each head,
``E_j = Σ_k p(j | k) A_k``, to equal its target (1, or the fraction of the head inside the
crop), and the background's to equal 0.

Reproduces the official code (ZhihengCV/Bayesian-Crowd-Counting): cell centres
``((j + 1/2) s, (i + 1/2) s)``, squared distances rounded as that code rounds them
(:func:`gcc_jax.losses._geometry.expanded_squared_distances`), both background models
(the 2021 ``(st_size·ratio)² / (d_min² + 1e-5)`` and the 2019 ``(st_size·ratio − d_min)²``),
and the batch reduction ``(1/B) Σ_b L_b``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gcc_jax.losses import _geometry
# BL's batch loss: the mean of its per-image losses, as its official trainer computes it.
from gcc_jax.losses._reduction import mean_of_totals as batch_loss

__all__ = ["BACKGROUND_MODELS", "BLHyperParameters", "batch_loss", "bayesian_loss"]

BACKGROUND_MODELS = ("2021", "2019")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BLHyperParameters:
    """BL's hyper-parameters, checked once when made (frozen and hashable). The defaults are
    the 2021 official code's.

    Attributes:
      sigma: standard deviation of the head likelihood, in pixels.
      stride: size of one density cell in pixels.
      use_background: add the background row.
      background_ratio: ``d = st_size · background_ratio``; 1.0 in the 2021 code, 0.15 in the
        2019 code (0.1 recommended there for ShanghaiTech A).
      background: ``"2021"`` or ``"2019"``, the background model (see
        :func:`gcc_jax.losses.bayesian_loss`).

    Raises:
      ValueError: a hyper-parameter out of its range or not one of its choices (the message
        names it).
    """

    sigma: float = 8.0
    stride: float = 8.0
    use_background: bool = True
    background_ratio: float = 1.0
    background: str = "2021"

    def __post_init__(self):
        _geometry.check_positive("sigma", self.sigma)
        _geometry.check_positive("stride", self.stride)
        _geometry.check_positive("background_ratio", self.background_ratio)
        _geometry.check_choice("background", self.background, BACKGROUND_MODELS)
        if not isinstance(self.use_background, (bool, np.bool_)):
            raise ValueError(f"use_background must be a bool, got {self.use_background!r}")
        # A frozen dataclass sets its own fields through object.__setattr__.
        for name in ("sigma", "stride", "background_ratio"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "use_background", bool(self.use_background))

    def batch_loss(self, terms: Mapping[str, jax.Array]) -> jax.Array:
        """BL's batch loss, :func:`batch_loss` of the per-image ``terms``."""
        return batch_loss(terms)


def _background_distance(min_distance, st_size, *, ratio: float, model: str):
    """Squared "distance" from each cell to the background, ``[n]`` (pixels²).

    ``min_distance`` is the squared distance from each cell to its nearest head, ``[n]``.
    """
    d = st_size * ratio
    if model == "2021":
        return d * d / (min_distance + 1e-5)
    # 2019: k̄ = exp(−(d − ‖x − y_nearest‖)² / (2σ²)), the supplemental's background model.
    return (d - jnp.sqrt(min_distance)) ** 2


def _image_loss(density, points, point_mask, targets, st_size, *, sigma, stride, use_background,
                background_ratio, background):
    """BL of one image: ``density`` ``[h, w]``, ``points`` ``[M, 2]``, ``point_mask`` ``[M]``,
    ``targets`` ``[M]``, ``st_size`` scalar; returns the scalar ``Σ_j |t_j − E_j|``."""
    h, w = density.shape
    flat = density.reshape(h * w)
    has_points = jnp.any(point_mask)
    # The posterior is a constant of the loss (no learnable part); stopping its gradient also
    # keeps sqrt(0) in the 2019 background out of any derivative with respect to the points.
    points = jax.lax.stop_gradient(points)
    distance = _geometry.expanded_squared_distances(points, h, w, stride=stride)  # [M, n]
    logits = -distance / (2.0 * sigma**2)
    # Padding rows get a finite, hopeless logit: with −inf, a column of padding only (no heads,
    # no background) would give exp(−inf − (−inf)) = NaN.
    floor = jnp.finfo(logits.dtype).min / 4
    logits = jnp.where(point_mask[:, None], logits, floor)
    top = jnp.max(logits, axis=0)  # [n]
    if use_background:
        nearest = jnp.min(jnp.where(point_mask[:, None], distance, jnp.inf), axis=0)
        # An image without heads has no nearest head; its loss is taken from the branch below.
        nearest = jnp.where(has_points, jnp.maximum(nearest, 0.0), 1.0)
        bg = _background_distance(nearest, st_size, ratio=background_ratio, model=background)
        bg_logits = -bg / (2.0 * sigma**2)
        top = jnp.maximum(top, bg_logits)
    # Softmax over the rows (heads, then background) without materialising the posterior:
    # E_j = Σ_k p_jk A_k = Σ_k e_jk (A_k / Z_k) with e = exp(logit − max), Z = Σ_rows e.
    unnormalised = jnp.exp(logits - top)  # [M, n]
    partition = jnp.sum(unnormalised, axis=0)
    if use_background:
        bg_unnormalised = jnp.exp(bg_logits - top)
        partition = partition + bg_unnormalised
    weights = flat / partition
    expected = unnormalised @ weights  # E_j, [M]
    residual = _geometry.abs_zero_subgradient(jnp.where(point_mask, targets, 0.0) - expected)
    with_points = jnp.sum(jnp.where(point_mask, residual, 0.0))
    if use_background:  # target 0 for the background's expected count
        with_points += _geometry.abs_zero_subgradient(jnp.sum(bg_unnormalised * weights))
    without_points = _geometry.abs_zero_subgradient(jnp.sum(flat))  # |0 − Σ_k A_k|
    return jnp.where(has_points, with_points, without_points)


@functools.partial(
    jax.jit,
    static_argnames=("sigma", "stride", "use_background", "background_ratio", "background"),
)
def _batch_losses(density, points, point_mask, targets, st_size, **static):
    if points.shape[1] == 0:  # no point slots: every image is empty
        return jax.vmap(lambda d: _geometry.abs_zero_subgradient(jnp.sum(d)))(density)
    return jax.vmap(functools.partial(_image_loss, **static))(
        density, points, point_mask, targets, st_size
    )


def bayesian_loss(
    density: jnp.ndarray,
    points: jnp.ndarray,
    point_mask: jnp.ndarray,
    *,
    st_size,
    targets=None,
    **hyper_parameters,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Bayesian Loss of a batch of density maps against head points.

    For one image with density ``A`` on cells ``k`` centred at ``c_k = ((j+½)s, (i+½)s)`` and
    heads ``P_j`` (``(x, y)`` pixels), with ``D_jk = ‖P_j − c_k‖²``::

      D_bg,k = (st_size · background_ratio)² / (min_j D_jk + 1e-5)       background="2021"
      D_bg,k = (st_size · background_ratio − sqrt(min_j D_jk))²          background="2019"
      p(j | k) = softmax_j(−D_jk / (2σ²))       over the heads (and the background, last)
      E_j = Σ_k p(j | k) A_k
      L = Σ_j |t_j − E_j| + |0 − E_bg|

    An image without heads has ``L = |Σ_k A_k|``. The batch loss is ``(1/B) Σ_b L_b``. The
    posterior is a constant: gradients flow into ``A`` only. At ``|·| = 0`` the subgradient
    is 0, as in PyTorch.

    Args:
      density: ``[B, h, w]`` non-negative, finite density maps at ``stride``, computed in
        float32 (float64 stays float64); see :mod:`gcc_jax.losses` on other values.
      points: ``[B, M, 2]`` head points ``(x, y)`` = (column, row) in crop pixels, padded.
      point_mask: ``[B, M]`` boolean, ``False`` marks padding rows of ``points``.
      st_size: ``[B]`` (or a scalar for all images) ``min(height, width)`` in pixels of the whole
        source image each crop was cut from; sets the background distance.
      targets: ``[B, M]`` target count of each head (the reference loaders pass the fraction of
        the head box inside the crop); ``None`` means 1 for every head.
      **hyper_parameters: the fields of :class:`BLHyperParameters` (``sigma``, ``stride``,
        ``use_background``, ``background_ratio``, ``background``), the 2021 code's defaults.

    Returns:
      ``(loss, terms)``: the scalar batch loss and ``{"total": [B]}``, the per-image ``L_b``.

    Raises:
      ValueError: on inconsistent shapes, a density or points that are not real numbers, a
        point_mask that is not boolean, or invalid hyper-parameters.
      TypeError: a keyword that is not a field of :class:`BLHyperParameters`.

    References:
      Z. Ma, X. Wei, X. Hong, Y. Gong, "Bayesian Loss for Crowd Count Estimation with Point
      Supervision", ICCV 2019; official code ZhihengCV/Bayesian-Crowd-Counting.
    """
    density, points, point_mask = _geometry.prepare_batch(density, points, point_mask, loss="bayesian_loss")
    hyper = BLHyperParameters(**hyper_parameters)
    batch, num_points = jnp.shape(points)[:2]
    st_shape = jnp.shape(st_size)
    if st_shape not in ((), (batch,)):
        raise ValueError(
            f"bayesian_loss: st_size must have shape [B] = ({batch},) or be a scalar, "
            f"got shape {st_shape}"
        )
    if targets is None:
        targets = jnp.ones((batch, num_points), density.dtype)
    elif jnp.shape(targets) != (batch, num_points):
        raise ValueError(
            f"bayesian_loss: targets must have shape [B, M] = {(batch, num_points)} to match "
            f"points, got shape {jnp.shape(targets)}"
        )
    losses = _batch_losses(
        density,
        points,
        point_mask,
        jnp.asarray(targets, density.dtype),
        jnp.broadcast_to(jnp.asarray(st_size, density.dtype), (batch,)),
        sigma=hyper.sigma,
        stride=hyper.stride,
        use_background=hyper.use_background,
        background_ratio=hyper.background_ratio,
        background=hyper.background,
    )
    terms = {"total": losses}
    return hyper.batch_loss(terms), terms
