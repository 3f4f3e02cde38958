"""What running a trained model needs, shared by training, inference, evaluate and predict.

Imports nothing of :mod:`gcc_jax.training`, so that inference and the command lines that
predict or evaluate do not go through the training program.

- :mod:`~gcc_jax.runtime.config` — checking, saving and loading run configs.
- :mod:`~gcc_jax.runtime.recipes` — each loss's official training recipe for the unset fields
  (a config is resolved against it when it is loaded).
- :mod:`~gcc_jax.runtime.mesh` — the ``data`` mesh, replicated / batch shardings,
  multi-host batch assembly, ``jax.distributed`` start-up.
- :mod:`~gcc_jax.runtime.model` — the network of a config and its jitted prediction step.
- :mod:`~gcc_jax.runtime.checkpoints` — orbax checkpoints of a run (resumable + best by MAE):
  written by training, read by everything; damaged ones skipped, failed saves reported.
- :mod:`~gcc_jax.runtime.evaluation` — per-image predictions and counting / localization
  metrics over a split.
"""

from gcc_jax.runtime.checkpoints import CheckpointError, RunCheckpoints, restore_params
from gcc_jax.runtime.config import (
    check_config,
    config_for_command,
    dataset_kwargs,
    load_config_module,
    load_workdir_config,
    pipeline_kwargs,
    save_config,
)
from gcc_jax.runtime.evaluation import (
    EvalResult,
    evaluate,
    evaluate_records,
    iterate_predictions,
    local_eval_mesh,
    make_eval_batches,
    mean_training_count,
    to_local_mesh,
)
from gcc_jax.runtime.mesh import (
    DATA_AXIS,
    batch_sharding,
    create_mesh,
    global_batch,
    initialize_distributed,
    replicate,
    replicated_sharding,
)
from gcc_jax.runtime.model import create_model, make_predict_fn
from gcc_jax.runtime.recipes import RECIPE_FIELDS, RECIPES, recipe, resolve_recipe

__all__ = [
    "DATA_AXIS",
    "RECIPES",
    "RECIPE_FIELDS",
    "CheckpointError",
    "EvalResult",
    "RunCheckpoints",
    "batch_sharding",
    "check_config",
    "config_for_command",
    "create_mesh",
    "create_model",
    "dataset_kwargs",
    "evaluate",
    "evaluate_records",
    "global_batch",
    "initialize_distributed",
    "iterate_predictions",
    "load_config_module",
    "load_workdir_config",
    "local_eval_mesh",
    "make_eval_batches",
    "make_predict_fn",
    "mean_training_count",
    "pipeline_kwargs",
    "recipe",
    "replicate",
    "replicated_sharding",
    "resolve_recipe",
    "restore_params",
    "save_config",
    "to_local_mesh",
]
