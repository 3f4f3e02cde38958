"""Tolerances derived from float32 round-off, so that the suite passes on any x86 CPU.

Two computations of one value that differ only in the order of their float32 operations (another
vector width — AVX2 against AVX-512 —, another XLA fusion, jit against eager, vmap against a
loop, one device against several) are not bitwise equal, and which one a machine runs is not
ours to choose. So a tolerance is a bound on that difference, never a number a machine printed:

* float32's spacing at 1 is ``EPS32 = 2⁻²³ ≈ 1.19e-7`` (unit round-off ``u = EPS32 / 2``);
* a sum of ``n`` terms computed in any order is off by at most ``(n − 1) u Σ|xᵢ|`` (the bound
  of left-to-right summation; blocked, pairwise and vectorised orders do better), so two orders
  differ by at most ``(n − 1) EPS32 Σ|xᵢ|``: :func:`sum_rtol` with ``condition = Σ|xᵢ| / |Σxᵢ|``;
* element-wise operations are rounded alike in every order and on every CPU (IEEE
  arithmetic; XLA's CPU backend neither reassociates nor contracts multiply-adds unless
  fast-math is switched on), up to a few ulps between ``exp`` / ``log`` implementations; so
  what differs between two evaluations are their reductions.

Long chains of dependent roundings (GL's and DM-Count's Sinkhorn loops, a network's layers)
make the worst case useless (it grows with every rounding of every iteration). There the
probabilistic bound of Higham and Mary ("A new approach to probabilistic rounding error
analysis", SIAM J. Sci. Comput. 2019) is used: with rounding errors independent and of mean
zero, a result built from ``N`` roundings is off by at most ``λ √N u`` relatively, except with
probability ``2 exp(−λ²/2)``; :func:`probable_rtol` takes ``λ = 8`` (a failure chance below
1e-13 per comparison). Which CPU runs the test changes the roundings, not this bound.
"""

import numpy as np

__all__ = ["EPS32", "LAMBDA", "bilinear_atol", "bl_rtol", "dm_rtol", "gl_rtol", "normalised_atol", "probable_rtol",
           "sum_rtol", "vgg_rtol"]

EPS32 = float(np.finfo(np.float32).eps)
# Confidence factor of the probabilistic bound: it fails with probability 2·exp(−λ²/2) < 1e-13.
LAMBDA = 8.0


def sum_rtol(length: int, *, condition: float = 1.0) -> float:
    """Relative difference allowed between two float32 sums of ``length`` terms in any orders.

    Args:
      length: number of terms ``n`` added.
      condition: ``Σ|xᵢ| / |Σxᵢ|`` (1 for terms of one sign).

    Returns:
      ``max(n − 1, 1) · EPS32 · condition``.
    """
    return max(length - 1, 1) * EPS32 * condition


def probable_rtol(roundings: int, *, condition: float = 1.0) -> float:
    """Relative difference allowed between two float32 evaluations built from ``roundings``
    dependent roundings (Higham–Mary: ``λ √N u`` per evaluation, so twice that between two).

    Args:
      roundings: number ``N`` of roundings the compared value depends on.
      condition: amplification of relative input errors into the result (``Σ|xᵢ| / |Σxᵢ|``
        for a sum).

    Returns:
      ``2 · λ · √N · (EPS32 / 2) · condition``.
    """
    return LAMBDA * float(np.sqrt(max(roundings, 1))) * EPS32 * condition


def gl_rtol(*, cells: int, points: int, blur: float = 0.01, scaling: float = 0.5, p: float = 1.0) -> float:
    """Relative difference allowed between two float32 evaluations of GL (any order, any CPU).

    The potentials come out of ``K`` ε-sweeps (the annealing schedule from the diameter, ≤ 1.6
    in crop-normalised units, down to ``blur``, and a last extrapolating sweep), each a
    log-sum-exp over the cells or the points: ``K·(cells + points)`` roundings, the probable
    bound of :func:`probable_rtol`. The plan ``exp((F + G − C)/ε)`` then turns the absolute
    rounding of its exponent's three O(1) parts into a relative error of ``3u/ε`` (``u`` =
    ``EPS32 / 2``, twice that between two evaluations), which dominates at small ``blur``.
    """
    sweeps = int(np.ceil(np.log(blur / 1.6) / np.log(scaling))) + 3
    return probable_rtol(sweeps * (cells + points)) + 3 * EPS32 / blur**p


def bl_rtol(*, heads: int, cells: int) -> float:
    """Relative difference allowed between two float32 evaluations of BL (any order, any CPU).

    Element-wise work (the expanded distances, the logits, ``exp``) is rounded alike
    everywhere; what differs are the softmax's sum over the heads and the background and the
    sums over the cells: :func:`probable_rtol` of their lengths, plus a few ulps of ``exp``.
    ``L = Σ_j |t_j − E_j| + E_bg`` subtracts near-equal parts: compare it also absolutely, at
    this bound times ``Σ t + Σ A``.
    """
    return probable_rtol(heads + 1 + cells) + 4 * EPS32


def dm_rtol(*, cells: int, heads: int, iters: int = 100) -> float:
    """Relative difference allowed between two float32 evaluations of DM-Count.

    Each Sinkhorn iteration reduces over the cells (``Kv``) and the heads (``Kᵀu``): a result
    depends on ``iters·(cells + heads)`` roundings in sums (:func:`probable_rtol`), plus a few
    ulps of ``exp`` / ``log``. The OT surrogate ``Σ A·g`` cancels two terms of size
    ``|⟨Â, β⟩|``, and count / TV subtract near-equal parts: compare those absolutely, at this
    bound times the size of the parts.
    """
    return probable_rtol(iters * (cells + heads)) + 4 * EPS32


def vgg_rtol(width: float) -> float:
    """Difference allowed between two float32 forward passes of ``VGG19Density(width)``,
    relative to the largest output (any order, any CPU, PyTorch's included).

    Every output depends on the sums of its 19 convolutions, ``k²·C_in`` products each
    (``k`` the kernel side, ``C_in`` the input channels): :func:`probable_rtol` of their total.
    Pooling and upsampling add at most a 4-term sum each.
    """
    from gcc_jax.models import conv_layers

    return probable_rtol(sum(spec.kernel_size**2 * spec.in_channels for spec in conv_layers(width)) + 4 * 5)


def bilinear_atol(*input_hws: tuple[int, int]) -> float:
    """Difference allowed between two float32 bilinear resizes (half-pixel centres) of pixel
    values in ``[0, 255]``, in grey levels: numpy's and TensorFlow's, or one build that
    contracts multiply-adds into FMAs and one that does not.

    Neither side reduces anything nor picks its code by CPU (numpy's add / multiply are
    correctly rounded on every SIMD path; TensorFlow's x86 wheels compile this kernel once, for
    a baseline without FMA), so on every x86 CPU the two agree to the bit. What a contracting
    build changes, per resize of an ``h × w`` input:

    * the sample position ``p = (x + ½)·s − ½`` (``s`` = input / output side, the same float32
      division in both): the product's and the difference's roundings against an FMA's one,
      ``≤ 3u·side`` apart (``u = EPS32 / 2``; the weight ``p − ⌊p⌋`` is exact, and unused
      where both taps clamp to the border); the interpolant is continuous in ``p`` with a
      slope of at most 255 levels per pixel, along ``x`` and along ``y``:
      ``≤ 255 · 3u · (h + w)``;
    * the lerps ``a + (b − a)·t``: the ``y`` one averages the two ``x`` ones (weights
      ``1 − t``, ``t``), which carries their error on unchanged and adds its own; each stage
      rounds values ``≤ 255`` three times without FMAs and twice with: ``≤ 255 · 10u``.

    A chain of resizes (the resize rule, then the upscale) adds its terms: each is a weighted
    average of its input, so the earlier difference passes through unchanged.

    Args:
      *input_hws: ``(h, w)`` of the input of each resize in the chain.

    Returns:
      ``255 · EPS32 · Σ (5 + 1.5·(h + w))``.
    """
    return 255 * EPS32 * sum(5 + 1.5 * (height + width) for height, width in input_hws)


def normalised_atol(resize_atol: float) -> float:
    """:func:`bilinear_atol` carried through the ImageNet normalisation ``(x − 255·mean) · k``
    (``k = 1 / (255·std)``, the same float32 constants on both sides, ``255·k ≤ 1 / 0.224``).

    Inputs ``Δ`` apart give results ``≤ k·Δ`` apart plus the two roundings of each side
    (``u`` relatively on values ``≤ 255`` before and ``≤ 255·k`` after the product):
    ``(Δ / 255 + 4u) / 0.224``; equal inputs give equal results.
    """
    return (resize_atol / 255 + 2 * EPS32) / 0.224
