"""PyTorch weights → :class:`~gcc_jax.models.VGG19Density` variables.

Accepted files (all read with ``torch.load(..., weights_only=True)``, so a checkpoint from the
internet cannot run code):

- torchvision's ImageNet VGG19 (``vgg19-dcbb9e9d.pth``): ``features.N.{weight,bias}`` plus
  ``classifier.{0,3,6}.*`` (ignored). No head: convert with ``head="init"``.
- GL / BL checkpoints (``best_val.pth``, ``model.pth``): ``features.N.*`` and
  ``reg_layer.{0,2,4}.*``.
- DM-Count checkpoints: ``features.N.*``, ``reg_layer.{0,2}.*`` and ``density_layer.0.*``.
- Training checkpoints ``*.tar`` (GL / BL trainers): a dict whose ``model_state_dict`` holds one
  of the above. Keys saved from ``nn.DataParallel`` (``module.`` prefix) are accepted too.

PyTorch convolution weights are ``[out, in, kh, kw]`` (OIHW); Flax kernels are
``[kh, kw, in, out]`` (HWIO).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gcc_jax.models._vgg import ConvSpec, _Head, conv_layers

__all__ = ["load_torch_state_dict", "params_from_torch", "torch_head_layout"]

_TORCH_MISSING = 'reading PyTorch checkpoints needs torch; install it with: pip install "gcc_jax[torch]"'

# Index of each conv 3×3 in torchvision's / the references' ``features`` nn.Sequential
# (conv, ReLU pairs with a MaxPool2d between blocks).
_FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
# torchvision's ImageNet classifier (Linear layers at these indices), present in vgg19-*.pth.
_CLASSIFIER_PREFIXES = ("classifier.0.", "classifier.3.", "classifier.6.")


def _torch_prefixes(head_layout: str | None) -> tuple[str, ...]:
    """Module prefix (``"features.0"``) of each of the 19 convs, in :func:`conv_layers` order."""
    last = "density_layer.0" if head_layout == "density_layer" else "reg_layer.4"
    return tuple(f"features.{i}" for i in _FEATURE_INDICES) + ("reg_layer.0", "reg_layer.2", last)


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(_TORCH_MISSING) from err
    return torch


def _as_float32(key: str, value: Any, origin: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; converted without importing torch here
        value = value.detach().cpu()
        if not value.is_floating_point():
            raise ValueError(f"{origin}: {key!r} holds a {value.dtype} tensor, expected floating-point weights")
        return value.float().numpy()
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise ValueError(f"{origin}: {key!r} holds a {array.dtype} array, expected floating-point weights")
    return array.astype(np.float32)


def _normalise_state_dict(obj: Any, origin: str) -> dict[str, np.ndarray]:
    """Unwraps ``model_state_dict`` and ``module.``; returns ``{key: float32 array}``."""
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"{origin}: expected a non-empty state dict (or a dict with 'model_state_dict'), "
            f"got {type(obj).__name__}"
        )
    for key in obj:
        if not isinstance(key, str):
            raise ValueError(f"{origin}: state-dict keys must be strings, got {key!r}")
    keys = list(obj)
    strip = all(key.startswith("module.") for key in keys)
    return {(key[len("module.") :] if strip else key): _as_float32(key, obj[key], origin) for key in keys}


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint safely and returns its model weights as numpy arrays.

    Args:
      path: a ``.pth`` state dict or a ``.tar`` training checkpoint holding ``model_state_dict``.

    Returns:
      ``{key: float32 array}`` with PyTorch's key names and shapes (``module.`` stripped).

    Raises:
      ImportError: without torch (the message says ``pip install "gcc_jax[torch]"``).
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if the file does not load with ``weights_only=True`` or holds no state dict.
    """
    torch = _import_torch()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError(
            f"{path}: not a PyTorch checkpoint that loads safely ({_load_failure_reason(err)}); "
            f"gcc_jax reads weights only with torch.load(weights_only=True) and never retries "
            f"with weights_only=False, which would let the file run code"
        ) from err
    return _normalise_state_dict(obj, path)


def _load_failure_reason(err: Exception) -> str:
    """What torch found wrong, without its advice to load the file unsafely.

    torch wraps the actual finding ("Unsupported operand 193", "Trying to load unsupported
    GLOBAL posix.system ...") in paragraphs suggesting ``weights_only=False`` or allow-listing
    the offending global; only the finding's first sentence is kept.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch bolds part of its advice
    finding = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if finding is None:
        advice = ("weights_only", "Check the documentation", "Please file an issue")
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        findings = [p for p in paragraphs if not any(phrase in p for phrase in advice)]
        if not findings:
            return type(err).__name__
        reason = findings[0].splitlines()[0]
        return reason if "WeightsUnpickler" in text or "Weights only" in text else f"{type(err).__name__}: {reason}"
    return re.split(r"(?<=\.)\s", finding.group(1).strip(), maxsplit=1)[0]


def torch_head_layout(state_dict: Mapping[str, Any]) -> str | None:
    """Which regression head a (normalised) state dict carries.

    Args:
      state_dict: PyTorch keys → weights, as :func:`load_torch_state_dict` returns.

    Returns:
      ``"reg_layer"`` (GL / BL: ``reg_layer.{0,2,4}``), ``"density_layer"`` (DM-Count:
      ``reg_layer.{0,2}`` + ``density_layer.0``), or ``None`` when no head key is present
      (torchvision's ImageNet VGG19).

    Raises:
      ValueError: if the file mixes ``reg_layer.4`` and ``density_layer.0``.
    """
    has_reg_out = any(key.startswith("reg_layer.4.") for key in state_dict)
    has_density = any(key.startswith("density_layer.") for key in state_dict)
    if has_reg_out and has_density:
        raise ValueError("state dict holds both 'reg_layer.4.*' (GL/BL) and 'density_layer.0.*' (DM-Count) keys")
    if has_density:
        return "density_layer"
    if has_reg_out or any(key.startswith("reg_layer.") for key in state_dict):
        return "reg_layer"
    return None


def _check_keys(
    state: Mapping[str, np.ndarray],
    specs: tuple[ConvSpec, ...],
    prefixes: tuple[str, ...],
    *,
    need_head: bool,
    origin: str,
    head_layout: str | None,
) -> None:
    expected = {}
    for spec, prefix in zip(specs, prefixes):
        k = spec.kernel_size
        expected[f"{prefix}.weight"] = (spec.out_channels, spec.in_channels, k, k)
        expected[f"{prefix}.bias"] = (spec.out_channels,)
    # File order, so that the error names the first offending key as the file lists it.
    for key, value in state.items():
        if key in expected:
            if tuple(value.shape) != expected[key]:
                raise ValueError(
                    f"{origin}: {key!r} has shape {tuple(value.shape)}, expected {expected[key]} "
                    f"for VGG19Density(width={specs[0].out_channels / 64:g})"
                )
        elif not key.startswith(_CLASSIFIER_PREFIXES):
            raise ValueError(f"{origin}: unexpected key {key!r} (not a VGG19 features / reg_layer / density_layer weight)")
    feature_keys = [key for key in expected if key.startswith("features.")]
    head_keys = [key for key in expected if not key.startswith("features.")]
    for key in feature_keys + (head_keys if need_head else []):
        if key not in state:
            hint = ""
            if head_layout is None and key in head_keys:
                hint = " — the file has no regression head (e.g. torchvision's ImageNet VGG19); pass head='init'"
            raise ValueError(f"{origin}: missing key {key!r}{hint}")


def params_from_torch(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    *,
    head: str = "keep",
    width: float | None = None,
    rng: jax.Array | int = 0,
) -> dict:
    """Variables for :class:`~gcc_jax.models.VGG19Density` from PyTorch weights.

    Args:
      path_or_state_dict: a checkpoint file (see the module docstring for the accepted layouts)
        or an already loaded state dict (``{key: torch.Tensor or numpy array}``, optionally
        wrapped in ``{"model_state_dict": ...}``; no torch needed for numpy values).
      head: ``"keep"`` to take the regression head from the file (GL / BL / DM-Count
        checkpoints), ``"init"`` to initialise it afresh (N(0, 0.01), bias 0, as the
        references) — needed for torchvision's ImageNet VGG19, and the way to fine-tune a
        checkpoint's features with a new head.
      width: the model's channel multiplier; ``None`` infers it from ``features.0.weight``
        (64·width output channels). Given, it must match the file.
      rng: ``jax.random`` key or integer seed for ``head="init"``.

    Returns:
      ``{"params": {"features": ..., "head": ...}}``, float32, ready for ``model.apply`` with
      ``VGG19Density(width=...)``. The upsampling and output activation are not stored in
      PyTorch files: choose them with :func:`gcc_jax.models.official_head`.

    Raises:
      ImportError: a path is given and torch is not installed (says ``pip install "gcc_jax[torch]"``).
      ValueError: unreadable file, or keys / shapes that do not fit; the message names the file
        and the first offending key.
    """
    if head not in ("keep", "init"):
        raise ValueError(f"head must be 'keep' or 'init', got {head!r}")
    if isinstance(path_or_state_dict, Mapping):
        origin = "state dict"
        state = _normalise_state_dict(path_or_state_dict, origin)
    else:
        origin = os.fspath(path_or_state_dict)
        state = load_torch_state_dict(origin)

    first = "features.0.weight"
    if first not in state:
        raise ValueError(f"{origin}: missing key {first!r} (not a VGG19 state dict?)")
    if state[first].ndim != 4:
        raise ValueError(f"{origin}: {first!r} has shape {state[first].shape}, expected [64·width, 3, 3, 3]")
    file_width = state[first].shape[0] / 64
    if width is not None and width != file_width:
        raise ValueError(
            f"{origin}: width={width} does not match the file ({first!r} has {state[first].shape[0]} "
            f"output channels, i.e. width {file_width:g})"
        )
    try:
        specs = conv_layers(file_width)
    except ValueError as err:
        raise ValueError(f"{origin}: {first!r} has shape {state[first].shape}: {err}") from err

    head_layout = torch_head_layout(state)
    prefixes = _torch_prefixes(head_layout)
    _check_keys(state, specs, prefixes, need_head=head == "keep", origin=origin, head_layout=head_layout)

    params: dict[str, dict] = {"features": {}, "head": {}}
    for spec, prefix in zip(specs, prefixes):
        if spec.path[0] == "head" and head == "init":
            continue
        params[spec.path[0]][spec.path[1]] = {
            "kernel": jnp.asarray(state[f"{prefix}.weight"].transpose(2, 3, 1, 0)),  # OIHW → HWIO
            "bias": jnp.asarray(state[f"{prefix}.bias"]),
        }
    if head == "init":
        key = jax.random.key(rng) if isinstance(rng, int) else rng
        head_specs = specs[-3:]
        dummy = jnp.zeros((1, 1, 1, head_specs[0].in_channels), jnp.float32)
        params["head"] = _Head(head_specs, jnp.float32).init(key, dummy)["params"]
    return {"params": params}
