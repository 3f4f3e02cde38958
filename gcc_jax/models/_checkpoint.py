"""Model checkpoints on disk: the variables (orbax) plus the options that rebuild the module.

Layout of a model directory::

    DIR/model.json     {"format": "gcc_jax.VGG19Density", "version": 1,
                        "model_options": {"width": 1.0, "upsample": "nearest", "output": "abs"},
                        ...metadata (e.g. "source", "head" written by convert_weights)}
    DIR/variables/     orbax StandardCheckpointer tree {"params": {"features": ..., "head": ...}}

``VGG19Density(**model_options)`` rebuilds the module; ``dtype`` is a run-time choice and is
not stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import flax.core
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from gcc_jax.models._vgg import VGG19Density

__all__ = ["MODEL_OPTIONS", "save_variables", "load_variables"]

MODEL_OPTIONS = ("width", "upsample", "output")
_FORMAT = "gcc_jax.VGG19Density"
_VERSION = 1
_JSON = "model.json"
_VARIABLES = "variables"


def _model_and_abstract(model_options: Mapping[str, Any]) -> tuple[VGG19Density, Any]:
    unknown = sorted(set(model_options) - set(MODEL_OPTIONS))
    if unknown:
        raise ValueError(f"model_options: unknown option(s) {unknown}; allowed: {list(MODEL_OPTIONS)}")
    model = VGG19Density(**model_options)
    # Shapes only (no weights are computed): the tree the variables must match.
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3), jnp.float32))
    return model, abstract


def save_variables(
    directory: str | os.PathLike,
    variables: Mapping[str, Any],
    model_options: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Writes ``variables`` and the options of their :class:`VGG19Density` to ``directory``.

    Args:
      directory: target folder (created; must not hold a model already unless ``overwrite``).
      variables: ``{"params": ...}`` as ``model.init`` / :func:`params_from_torch` return.
      model_options: ``VGG19Density`` options among ``width``, ``upsample``, ``output``
        (missing ones take the module's defaults; all three are written).
      metadata: extra JSON-serialisable entries for ``model.json`` (e.g. the source file).
      overwrite: replace an existing model in ``directory``.

    Raises:
      ValueError: unknown options, metadata that clash with the reserved keys, or variables
        whose tree / shapes do not fit ``VGG19Density(**model_options)``.
      FileExistsError: ``directory`` already holds a model and ``overwrite`` is false.
    """
    model, abstract = _model_and_abstract(model_options)
    options = {name: getattr(model, name) for name in MODEL_OPTIONS}
    want = jax.tree_util.tree_flatten_with_path(abstract)[0]
    variables = flax.core.unfreeze(variables)
    have = dict(jax.tree_util.tree_flatten_with_path(variables)[0])
    if len(have) != len(want):
        raise ValueError(f"variables hold {len(have)} arrays, VGG19Density({options}) has {len(want)}")
    for path, spec in want:
        if path not in have:
            raise ValueError(f"variables lack {jax.tree_util.keystr(path)} of VGG19Density({options})")
        if tuple(have[path].shape) != spec.shape:
            raise ValueError(
                f"variables{jax.tree_util.keystr(path)} has shape {tuple(have[path].shape)}, "
                f"VGG19Density({options}) needs {spec.shape}"
            )
    record = {"format": _FORMAT, "version": _VERSION, "model_options": options}
    for key, value in (metadata or {}).items():
        if key in record:
            raise ValueError(f"metadata key {key!r} is reserved")
        record[key] = value

    directory = os.path.abspath(os.fspath(directory))
    json_path = os.path.join(directory, _JSON)
    if os.path.exists(json_path) and not overwrite:
        raise FileExistsError(f"{directory} already holds a model ({_JSON}); pass overwrite=True to replace it")
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(directory, _VARIABLES), jax.tree.map(jnp.asarray, variables), force=overwrite)
    checkpointer.wait_until_finished()
    with open(json_path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Reads a model directory written by :func:`save_variables` (or ``convert_weights``).

    Args:
      directory: the folder holding ``model.json`` and ``variables/``.

    Returns:
      ``(variables, model_options)``: ``VGG19Density(**model_options).apply(variables, images)``
      reproduces the saved model.

    Raises:
      FileNotFoundError: no ``model.json`` in ``directory``.
      ValueError: ``model.json`` is not a gcc_jax model record.
    """
    directory = os.path.abspath(os.fspath(directory))
    json_path = os.path.join(directory, _JSON)
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"{directory}: no {_JSON} (not a directory written by save_variables)")
    with open(json_path) as f:
        record = json.load(f)
    if not isinstance(record, dict) or record.get("format") != _FORMAT or not isinstance(record.get("model_options"), dict):
        raise ValueError(f"{json_path}: not a {_FORMAT} record")
    if record.get("version") != _VERSION:
        raise ValueError(f"{json_path}: format version {record.get('version')!r}, this gcc_jax reads {_VERSION}")
    model_options = record["model_options"]
    _, abstract = _model_and_abstract(model_options)
    variables = ocp.StandardCheckpointer().restore(os.path.join(directory, _VARIABLES), abstract)
    return variables, dict(model_options)
