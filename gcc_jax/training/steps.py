"""The jitted training step (the prediction step is :func:`gcc_jax.runtime.make_predict_fn`).

:func:`train_step` is one pure function: forward, loss, backward, optimizer update, and a flat
dict of scalar measurements. :func:`make_train_step` jits it for a mesh: state replicated, batch
split over ``data``, state buffers donated; nothing in it waits for the host, so the host can
queue the next batch while the devices work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from gcc_jax.imagenet import normalize_crops
from gcc_jax.runtime.mesh import batch_sharding, replicated_sharding
from gcc_jax.training.objective import LossFn
from gcc_jax.training.state import TrainState

__all__ = ["TRAIN_BATCH_KEYS", "make_train_step", "train_step"]

# The batch entries the step reads (the pipeline's other entries stay on the host);
# ``crop_box`` comes with uint8 images, which the step normalises on the device.
TRAIN_BATCH_KEYS = ("image", "points", "point_mask", "targets", "st_size", "crop_box")


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    loss_fn: LossFn,
    learning_rate_fn: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch.

    Args:
      state: the train state (``params``, ``opt_state``, ``step``).
      batch: a training batch (its entries: :class:`gcc_jax.data.TrainEpoch`), of which the
        step reads :data:`TRAIN_BATCH_KEYS`; uint8 images with ``crop_box`` are normalised
        here (:func:`gcc_jax.imagenet.normalize_crops`).
      loss_fn: ``(density, batch) -> (loss, {term: [B]})`` (:func:`make_loss_fn`).
      learning_rate_fn: the schedule the optimizer uses (reported, not applied, here).

    Returns:
      ``(new_state, metrics)``; ``metrics`` holds scalars: ``loss`` (the batch loss the
      gradient is of), the batch mean of every loss term (``term/<name>``), ``count_error``
      (mean ``|Σ density − heads|`` over the crops), ``grad_norm`` and ``param_norm`` (global
      L2 norms; the gradient's before weight decay) and ``learning_rate`` (the rate of this
      update).
    """

    images = normalize_crops(batch["image"], batch["crop_box"]) if "crop_box" in batch else batch["image"]

    def objective(params):
        density = state.apply_fn({"params": params}, images)
        loss, terms = loss_fn(density, batch)
        return loss, (terms, density)

    (loss, (terms, density)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    heads = jnp.sum(batch["point_mask"], axis=1)
    metrics = {
        "loss": loss,
        "count_error": jnp.mean(jnp.abs(jnp.sum(density, axis=(1, 2)) - heads)),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(state.params),
        "learning_rate": jnp.asarray(learning_rate_fn(state.step), jnp.float32),
    }
    metrics.update({f"term/{name}": jnp.mean(value) for name, value in terms.items()})
    return new_state, metrics


def make_train_step(
    mesh: Mesh, *, loss_fn: LossFn, learning_rate_fn: optax.Schedule
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """:func:`train_step` jitted for data parallelism on ``mesh`` (state donated)."""
    replicated = replicated_sharding(mesh)

    def step(state, batch):
        return train_step(state, batch, loss_fn=loss_fn, learning_rate_fn=learning_rate_fn)

    return jax.jit(
        step,
        in_shardings=(replicated, batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
