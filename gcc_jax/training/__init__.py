"""The data-parallel training and evaluation program (``train.py`` is a thin CLI over it).

- :func:`train_and_evaluate` — the whole run: train, evaluate, checkpoint, resume.
- :mod:`~gcc_jax.training.mesh` — the ``data`` mesh, replicated / batch shardings,
  multi-host batch assembly, ``jax.distributed`` start-up.
- :mod:`~gcc_jax.training.state` — model, torch-style Adam, GL's warm-up, the train state.
- :mod:`~gcc_jax.training.objective` — ``config.loss`` → one loss function.
- :mod:`~gcc_jax.training.steps` — the jitted train step and prediction step.
- :mod:`~gcc_jax.training.evaluation` — per-image predictions and counting metrics over a split.
- :mod:`~gcc_jax.training.checkpoints` — orbax checkpoints (resumable + best by MAE), damaged
  ones skipped, failed saves reported.
- :mod:`~gcc_jax.training.preemption` — stopping cleanly on SIGTERM / SIGINT (one or several hosts).
- :mod:`~gcc_jax.training.writers` — ``metrics.jsonl``, TensorBoard, progress bar.
- :mod:`~gcc_jax.training.pictures` — density-map pictures.
- :mod:`~gcc_jax.training.config` — checking, saving and loading run configs.
- :mod:`~gcc_jax.training.recipes` — each loss's official training recipe for the unset fields.
"""

from gcc_jax.training.checkpoints import CheckpointError, RunCheckpoints, restore_params
from gcc_jax.training.config import (
    check_config,
    dataset_kwargs,
    load_config_module,
    load_workdir_config,
    pipeline_kwargs,
    save_config,
)
from gcc_jax.training.evaluation import (
    EvalResult,
    evaluate,
    iterate_predictions,
    local_eval_mesh,
    make_eval_batches,
    mean_training_count,
    to_local_mesh,
)
from gcc_jax.training.loop import NonFiniteLossError, train_and_evaluate
from gcc_jax.training.preemption import STOPPED_STATUS, TrainingStopped
from gcc_jax.training.mesh import (
    DATA_AXIS,
    batch_sharding,
    create_mesh,
    global_batch,
    initialize_distributed,
    replicate,
    replicated_sharding,
)
from gcc_jax.training.objective import make_loss_fn
from gcc_jax.training.recipes import RECIPE_FIELDS, RECIPES, recipe, resolve_recipe
from gcc_jax.training.state import (
    TrainState,
    create_learning_rate_fn,
    create_model,
    create_optimizer,
    create_train_state,
)
from gcc_jax.training.steps import make_predict_fn, make_train_step, train_step
from gcc_jax.training.writers import MetricWriter, ProgressBar, read_metrics

__all__ = [
    "DATA_AXIS",
    "RECIPES",
    "RECIPE_FIELDS",
    "EvalResult",
    "MetricWriter",
    "CheckpointError",
    "NonFiniteLossError",
    "STOPPED_STATUS",
    "TrainingStopped",
    "ProgressBar",
    "RunCheckpoints",
    "TrainState",
    "batch_sharding",
    "check_config",
    "create_learning_rate_fn",
    "create_mesh",
    "create_model",
    "create_optimizer",
    "create_train_state",
    "dataset_kwargs",
    "evaluate",
    "global_batch",
    "initialize_distributed",
    "iterate_predictions",
    "load_config_module",
    "load_workdir_config",
    "local_eval_mesh",
    "make_eval_batches",
    "make_loss_fn",
    "make_predict_fn",
    "make_train_step",
    "mean_training_count",
    "pipeline_kwargs",
    "read_metrics",
    "recipe",
    "resolve_recipe",
    "replicate",
    "replicated_sharding",
    "restore_params",
    "save_config",
    "to_local_mesh",
    "train_and_evaluate",
    "train_step",
]
