"""Parameter count and FLOPs of :class:`~gcc_jax.models.VGG19Density` (users compare models by these).

Command line: ``python -m gcc_jax.models [--width 1.0] [--size 512 512]`` prints the
per-layer table for one image of that size.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from gcc_jax.models._vgg import _FEATURE_STRIDE, VGG19Density, conv_layers

__all__ = ["param_count", "forward_flops", "model_summary", "main"]


def param_count(variables: Mapping[str, Any]) -> int:
    """Number of trainable parameters (the entries of ``variables["params"]``).

    Args:
      variables: ``{"params": ...}`` (arrays or ``jax.ShapeDtypeStruct`` from ``jax.eval_shape``),
        or a bare parameter tree.

    Returns:
      The total number of scalars.
    """
    params = variables["params"] if "params" in variables else variables
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def _layer_flops(model: VGG19Density, height: int, width: int) -> list[tuple[str, tuple[int, int, int], int]]:
    """``(layer, output [h, w, C], FLOPs)`` per convolution for one ``height × width`` image."""
    # The module pads to a multiple of 16 first, so every layer runs on the padded size.
    padded_h = -(-height // _FEATURE_STRIDE) * _FEATURE_STRIDE
    padded_w = -(-width // _FEATURE_STRIDE) * _FEATURE_STRIDE
    rows = []
    for spec in conv_layers(model.width):
        h, w = padded_h // spec.stride, padded_w // spec.stride
        macs = spec.kernel_size**2 * spec.in_channels * spec.out_channels * h * w
        rows.append(("/".join(spec.path), (h, w, spec.out_channels), 2 * macs))
    return rows


def forward_flops(model: VGG19Density, *, height: int = 512, width: int = 512) -> int:
    """Floating-point operations of one forward pass on one ``height × width`` image.

    Counted as 2 × the multiply-adds of the 19 convolutions (``2 · k² · C_in · C_out · h · w``
    each, on the input padded to a multiple of 16). Bias additions, ReLUs, max-pools and the
    upsampling are left out: together they add well under 1 % at width 1.

    Args:
      model: the module (only its ``width`` matters).
      height: image height in pixels.
      width: image width in pixels.

    Returns:
      FLOPs per image.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height} × {width}")
    return sum(flops for _, _, flops in _layer_flops(model, height, width))


def model_summary(model: VGG19Density, *, height: int = 512, width: int = 512) -> str:
    """A per-layer table: output shape, parameters and FLOPs for one ``height × width`` image.

    Args:
      model: the module.
      height: image height in pixels.
      width: image width in pixels.

    Returns:
      Printable text ending with the totals.
    """
    specs = conv_layers(model.width)
    lines = [
        f"VGG19Density(width={model.width:g}, upsample={model.upsample!r}, output={model.output!r}), "
        f"one {height}×{width} image",
        f"{'layer':<18}{'output [h, w, C]':>20}{'params':>14}{'GFLOPs':>10}",
    ]
    total_params = 0
    for spec, (name, shape, flops) in zip(specs, _layer_flops(model, height, width)):
        params = spec.kernel_size**2 * spec.in_channels * spec.out_channels + spec.out_channels
        total_params += params
        lines.append(f"{name:<18}{str(list(shape)):>20}{params:>14,}{flops / 1e9:>10.2f}")
    total_flops = forward_flops(model, height=height, width=width)
    lines.append(f"{'total':<18}{'':>20}{total_params:>14,}{total_flops / 1e9:>10.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Prints :func:`model_summary` and checks its parameter total against ``model.init``."""
    parser = argparse.ArgumentParser(prog="python -m gcc_jax.models", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (multiple of 1/64)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="image size")
    args = parser.parse_args(argv)
    model = VGG19Density(width=args.width)
    print(model_summary(model, height=args.size[0], width=args.size[1]))
    abstract = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
    print(f"parameters in model.init: {param_count(abstract):,}")

