"""Model, optimizer, learning-rate schedule and the replicated train state of a run.

The optimizer reproduces ``torch.optim.Adam(params, lr, weight_decay=wd)`` of the three
references: torch adds ``wd · θ`` to the gradient *before* Adam's moment estimates (an L2
penalty, not AdamW's decoupled decay), so the chain is ``add_decayed_weights(wd)`` →
``scale_by_adam`` → ``scale_by_learning_rate(schedule)``.
"""

from __future__ import annotations

import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state
from jax.sharding import Mesh

from gcc_jax.models import MODEL_OPTIONS, VGG19Density, load_variables
from gcc_jax.runtime import config as config_lib
from gcc_jax.runtime.mesh import replicate, replicated_sharding
from gcc_jax.runtime.model import create_model
from gcc_jax.runtime.recipes import check_resolved

__all__ = [
    "TrainState",
    "create_learning_rate_fn",
    "create_optimizer",
    "create_train_state",
    "load_init_checkpoint",
]

_log = logging.getLogger(__name__)

# step (int32 scalar), params, opt_state; apply_fn and tx are static.
TrainState = train_state.TrainState


def create_learning_rate_fn(
    optimizer_config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int | None = None
) -> optax.Schedule:
    """GL's warm-up, then a constant rate (the references) or a cosine decay to 0.

    Warm-up: ``lr · (e + 1) / W`` during epoch ``e < W``. GL's trainer
    (``utils/emd_dot_trainer.py``) sets the rate once per epoch, so the warm-up is a staircase
    of ``W`` steps, not a per-step ramp; ``W = 0`` means none. ``schedule="cosine"`` multiplies
    the rate by ``(1 + cos(π · step / total_steps)) / 2``.

    Args:
      optimizer_config: ``config.optimizer`` (``learning_rate``, ``warmup_epochs``, ``schedule``:
        ``"constant"`` or ``"cosine"``).
      steps_per_epoch: optimizer steps in one epoch.
      total_steps: steps of the whole run (needed by ``"cosine"``).

    Returns:
      ``schedule(step) -> learning rate``.

    Raises:
      ValueError: an unknown schedule, ``"cosine"`` without ``total_steps``, or
        ``learning_rate`` / ``warmup_epochs`` unset (a config whose recipe is not resolved).
    """
    base = optimizer_config.learning_rate
    warmup = optimizer_config.warmup_epochs
    _check_resolved(optimizer_config, ("learning_rate", "warmup_epochs"))
    after_warmup = optimizer_config.schedule
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if after_warmup not in ("constant", "cosine"):
        raise ValueError(f"config.optimizer.schedule must be 'constant' or 'cosine', got {after_warmup!r}")
    if after_warmup == "cosine" and not total_steps:
        raise ValueError("config.optimizer.schedule='cosine' needs the run's total_steps")

    def schedule(step):
        rate = jnp.asarray(base, jnp.float32)
        if warmup:
            rate = rate * jnp.minimum((step // steps_per_epoch + 1) / warmup, 1.0)
        if after_warmup == "cosine":
            rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step / total_steps, 1.0)))
        return rate

    return schedule


def _check_resolved(optimizer_config: ml_collections.ConfigDict, names) -> None:
    check_resolved({f"optimizer.{name}": getattr(optimizer_config, name) for name in names})


def create_optimizer(optimizer_config: ml_collections.ConfigDict, learning_rate_fn: optax.Schedule):
    """torch-style Adam with L2 weight decay (see the module docstring).

    Raises:
      ValueError: ``weight_decay`` unset (a config whose recipe is not resolved).
    """
    _check_resolved(optimizer_config, ("weight_decay",))
    return optax.chain(
        optax.add_decayed_weights(optimizer_config.weight_decay),
        optax.scale_by_adam(b1=optimizer_config.b1, b2=optimizer_config.b2, eps=optimizer_config.eps),
        optax.scale_by_learning_rate(learning_rate_fn),
    )


def load_init_checkpoint(path) -> tuple[dict, dict]:
    """The parameters to start a run from: a model directory, or a training workdir's best checkpoint.

    Args:
      path: a model directory (``model.json``, written by ``gcc_jax.convert_weights`` or
        :func:`gcc_jax.models.save_variables`) or the workdir of an earlier training run
        (``config.json``): its best checkpoint by validation MAE, or its newest resumable one
        (with a logged warning) when the run never validated.

    Returns:
      ``(params, model_options)``: host-side parameters and the ``VGG19Density`` options they
      were trained with (``width``, ``upsample``, ``output``).

    Raises:
      FileNotFoundError: ``path`` is neither kind of directory, or a workdir without checkpoints.
    """
    # checkpoints.py imports TrainState from this module, hence the import here.
    from gcc_jax.runtime.checkpoints import restore_params

    path = pathlib.Path(path)
    if not (path / config_lib.CONFIG_FILE).is_file():
        if not (path / "model.json").is_file():
            raise FileNotFoundError(
                f"init checkpoint {path} is neither a training workdir (no {config_lib.CONFIG_FILE}) nor a model "
                "directory (no model.json, see python -m gcc_jax.convert_weights)"
                + ("" if path.is_dir() else ": there is no such directory")
            )
        variables, options = load_variables(path)
        return variables["params"], options
    model = create_model(config_lib.load_workdir_config(path))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3), jnp.float32))["params"]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
    try:
        params, step = restore_params(path, abstract, which="best")
        which = "best"
    except FileNotFoundError:
        params, step = restore_params(path, abstract, which="latest")
        which = "latest"
        _log.warning("%s has no best checkpoint (the run never validated); starting from its latest, step %d", path, step)
    _log.info("initialising from the %s checkpoint of %s (step %d)", which, path, step)
    return jax.device_get(params), {name: getattr(model, name) for name in MODEL_OPTIONS}


def _initial_params(config: ml_collections.ConfigDict, model: VGG19Density):
    """Host-side initial parameters from ``config.model.init_checkpoint``."""
    params, options = load_init_checkpoint(config.model.init_checkpoint)
    if abs(options["width"] - model.width) > 1e-9:
        raise ValueError(
            f"config.model.init_checkpoint={config.model.init_checkpoint!r} holds a width-{options['width']} "
            f"model, config.model.width is {model.width}"
        )
    wanted = {"upsample": model.upsample, "output": model.output}
    if any(options[key] != value for key, value in wanted.items()):
        # The head options carry no parameters: the weights fit; the loss decides the head.
        _log.warning(
            "init checkpoint %s was converted for upsample=%s output=%s; training with %s (loss %s)",
            config.model.init_checkpoint, options["upsample"], options["output"], wanted, config.loss.name,
        )
    return params


def create_train_state(
    config: ml_collections.ConfigDict, model: VGG19Density, tx: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
    """The initial train state, replicated on every device of ``mesh``.

    Parameters come from ``config.model.init_checkpoint`` when set, otherwise from
    ``model.init`` with ``jax.random.key(config.seed)`` (the same on every process).

    Returns:
      ``TrainState`` (step 0) whose arrays are replicated on ``mesh``.
    """
    replicated = replicated_sharding(mesh)
    dummy = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)

    def from_params(params):
        return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    if config.model.init_checkpoint:
        params = replicate(_initial_params(config, model), mesh)
        return jax.jit(from_params, out_shardings=replicated)(params)

    if model.width == 1.0:
        _log.warning(
            "training the full VGG19 from a random initialisation; the references start from ImageNet "
            "weights (config.model.init_checkpoint, see python -m gcc_jax.convert_weights)"
        )

    def from_seed(seed):
        return from_params(model.init(jax.random.key(seed), dummy)["params"])

    # The parameters are replicated, never sharded, so the partitionable threefry variant buys
    # nothing here, and the classic one compiles the 19 initialisers ~5x faster on CPU.
    with jax.threefry_partitionable(False):
        return jax.jit(from_seed, out_shardings=replicated)(config.seed)
