"""The network a run config describes, and its jitted forward pass on a mesh."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from gcc_jax.models import VGG19Density, official_head
from gcc_jax.runtime.mesh import batch_sharding, replicated_sharding

__all__ = ["create_model", "make_predict_fn"]


def create_model(config: ml_collections.ConfigDict) -> VGG19Density:
    """``VGG19Density`` of ``config.model`` with the head of ``config.loss.name``'s official code."""
    return VGG19Density(
        width=config.model.width,
        dtype=jnp.dtype(config.model.dtype),
        **official_head(config.loss.name),
    )


def make_predict_fn(apply_fn: Callable, mesh: Mesh) -> Callable[[dict, jax.Array], jax.Array]:
    """``predict(variables, images [b, H, W, 3]) -> density [b, H/8, W/8]`` jitted on ``mesh``:
    variables replicated, images split over ``data`` (``b`` must divide evenly)."""
    return jax.jit(
        apply_fn,
        in_shardings=(replicated_sharding(mesh), batch_sharding(mesh)),
        out_shardings=batch_sharding(mesh),
    )
