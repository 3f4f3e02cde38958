"""Tolerances derived from float32 round-off, so that the suite passes on any x86 CPU.

Two computations of one value that differ only in the order of their float32 operations (another
vector width — AVX2 against AVX-512 —, another XLA fusion, jit against eager, vmap against a
loop, one device against several) are not bitwise equal, and which one a machine runs is not
ours to choose. So a tolerance is a bound on that difference, never a number a machine printed:

* float32's spacing at 1 is ``EPS32 = 2⁻²³ ≈ 1.19e-7`` (unit round-off ``u = EPS32 / 2``);
* a sum of ``n`` terms computed in any order is off by at most ``(n − 1) u Σ|xᵢ|`` (the bound
  of left-to-right summation; blocked, pairwise and vectorised orders do better), so two orders
  differ by at most ``(n − 1) EPS32 Σ|xᵢ|``: :func:`sum_rtol` with ``condition = Σ|xᵢ| / |Σxᵢ|``;
* a chain of ``k`` roundings (products, ``exp``, ``log``) adds about ``k u`` relative each.

Iterative solvers (GL's Sinkhorn loop, DM-Count's) carry an error through their iterations;
their tests give the derivation where they use one.
"""

import numpy as np

__all__ = ["EPS32", "sum_rtol"]

EPS32 = float(np.finfo(np.float32).eps)


def sum_rtol(length: int, *, condition: float = 1.0) -> float:
    """Relative difference allowed between two float32 sums of ``length`` terms in any orders.

    Args:
      length: number of terms ``n`` added.
      condition: ``Σ|xᵢ| / |Σxᵢ|`` (1 for terms of one sign).

    Returns:
      ``max(n − 1, 1) · EPS32 · condition``.
    """
    return max(length - 1, 1) * EPS32 * condition
