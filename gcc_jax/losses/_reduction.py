"""The batch reduction shared by the losses whose official trainers average per-image losses."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

__all__ = ["mean_of_totals"]


def mean_of_totals(terms: Mapping[str, jax.Array]) -> jax.Array:
    """The batch loss ``(1/B) Σ_b total_b`` from the per-image losses ``terms["total"]`` ``[B]``.

    BL's and L2's official trainers average their images' losses; neither loss has a
    hyper-parameter that enters its reduction.
    """
    return jnp.mean(terms["total"])
