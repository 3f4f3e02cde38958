"""The data-parallel training program (``train.py`` is a thin CLI over it).

- :func:`train_and_evaluate` — the whole run: train, evaluate, checkpoint, resume.
- :mod:`~gcc_jax.training.state` — torch-style Adam, GL's warm-up, the train state.
- :mod:`~gcc_jax.training.objective` — ``config.loss`` → one loss function.
- :mod:`~gcc_jax.training.steps` — the jitted train step.
- :mod:`~gcc_jax.training.preemption` — stopping cleanly on SIGTERM / SIGINT (one or several hosts).
- :mod:`~gcc_jax.training.writers` — ``metrics.jsonl``, TensorBoard, progress bar.
- :mod:`~gcc_jax.training.pictures` — density-map pictures.

What a trained model needs to run — configs and recipes, the mesh, the network and its
prediction step, checkpoints, evaluation over a split — lives in :mod:`gcc_jax.runtime`, which
this package imports from.
"""

from gcc_jax.training.loop import NonFiniteLossError, train_and_evaluate
from gcc_jax.training.objective import make_loss_fn
from gcc_jax.training.preemption import STOPPED_STATUS, TrainingStopped
from gcc_jax.training.state import (
    TrainState,
    create_learning_rate_fn,
    create_optimizer,
    create_train_state,
)
from gcc_jax.training.steps import make_train_step, train_step
from gcc_jax.training.writers import MetricWriter, ProgressBar, read_metrics

__all__ = [
    "MetricWriter",
    "NonFiniteLossError",
    "STOPPED_STATUS",
    "TrainingStopped",
    "ProgressBar",
    "TrainState",
    "create_learning_rate_fn",
    "create_optimizer",
    "create_train_state",
    "make_loss_fn",
    "make_train_step",
    "read_metrics",
    "train_and_evaluate",
    "train_step",
]
