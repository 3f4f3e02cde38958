"""The batch reduction shared by the losses whose official trainers average per-image losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["mean_of_totals"]


def mean_of_totals(terms: Mapping[str, jax.Array], options: Mapping[str, Any]) -> jax.Array:
    """The batch loss ``(1/B) Σ_b total_b`` from the per-image losses ``terms["total"]`` ``[B]``.

    BL's and L2's official trainers average their images' losses. ``options`` (the loss's
    keyword options) do not enter it; the argument is there because every loss's batch
    reduction is called the same way (:mod:`gcc_jax.losses._registry`).
    """
    del options
    return jnp.mean(terms["total"])
