"""The VGG19 density regressor of GL, BL and DM-Count, as a ``flax.linen`` module.

Network (the three official code bases share it): VGG19 configuration "E" convolutions
(16 conv 3×3 + ReLU, a 2×2 max-pool after blocks 1–4, so stride 16), a ×2 upsampling to
stride 8, and a regression head conv 3×3 512→256 + ReLU, conv 3×3 256→128 + ReLU,
conv 1×1 128→1, then ``|·|`` or ReLU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "STRIDE",
    "UPSAMPLE_MODES",
    "OUTPUT_ACTIVATIONS",
    "ConvSpec",
    "VGG19Density",
    "conv_layers",
    "output_shape",
]

# Stride of the density map in input pixels: 16 (four max-pools) halved by the ×2 upsampling.
STRIDE = 8
# The network's total down-sampling before the upsampling; inputs are padded to a multiple of it.
_FEATURE_STRIDE = 16

UPSAMPLE_MODES = ("nearest", "bilinear")
OUTPUT_ACTIVATIONS = ("abs", "relu")

# VGG19 configuration "E": output channels of each conv 3×3, grouped in blocks; a 2×2 max-pool
# separates consecutive blocks (torchvision's fifth pool, after block 5, is not used).
_VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
# Regression head: (output channels, kernel size) at width 1.
_HEAD = ((256, 3), (128, 3), (1, 1))
_HEAD_NAMES = ("conv1", "conv2", "conv3")


def _is_concrete(size) -> bool:
    """Whether ``size`` is a number, not a symbolic dimension of ``jax.export``."""
    return isinstance(size, (int, np.integer))


def output_shape(height: int, width: int) -> tuple[int, int]:
    """Size of the density map :class:`VGG19Density` returns for a ``height × width`` input.

    The map has one cell per ``8 × 8`` pixel block, counting a partial block at the bottom /
    right edge: ``(ceil(height / 8), ceil(width / 8))``. Cell ``(i, j)`` covers input rows
    ``[8 i, 8 i + 8)`` and columns ``[8 j, 8 j + 8)``, so a head at pixel ``(x, y)`` belongs to
    cell ``(floor(y / 8), floor(x / 8))``, which always exists.

    Args:
      height: input height in pixels (positive).
      width: input width in pixels (positive).

    Returns:
      ``(h, w)``, the density map's rows and columns.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{name} must be a positive integer, got {size!r}")
    return -(-int(height) // STRIDE), -(-int(width) // STRIDE)


class ConvSpec(NamedTuple):
    """One convolution of the network (for weight conversion and FLOP counting).

    Attributes:
      path: ``(module, layer)`` names in the Flax parameter tree, e.g. ``("features", "conv1_1")``.
      in_channels: input channels.
      out_channels: output channels.
      kernel_size: square kernel side (3 or 1).
      stride: the stride, in input pixels, of the feature map the conv runs on (1, 2, 4, 8, 16
        in the features; 8 in the head).
    """

    path: tuple[str, str]
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int


def _channels(base: int, width: float) -> int:
    # Exact because width is a multiple of 1/64 and every base count but the output's 1 is a
    # multiple of 64; the single output channel never scales.
    return base if base == 1 else round(base * width)


def _check_width(width: float) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    if not math.isclose(width * 64, round(width * 64), rel_tol=0, abs_tol=1e-9):
        raise ValueError(
            f"width must be a multiple of 1/64 (so that every layer keeps an integer channel "
            f"count: conv1_1 has 64·width channels), got {width!r}"
        )


def conv_layers(width: float = 1.0) -> tuple[ConvSpec, ...]:
    """The 19 convolutions of :class:`VGG19Density` in forward order.

    Args:
      width: channel multiplier, a positive multiple of 1/64 (1.0 = the published network).

    Returns:
      16 feature convs (``features/conv{block}_{i}``) then 3 head convs
      (``head/conv1``, ``head/conv2``, ``head/conv3``).

    Raises:
      ValueError: for an invalid width.
    """
    _check_width(width)
    specs = []
    in_channels, stride = 3, 1
    for block, outs in enumerate(_VGG19_BLOCKS, start=1):
        if block > 1:
            stride *= 2
        for i, base in enumerate(outs, start=1):
            out = _channels(base, width)
            specs.append(ConvSpec(("features", f"conv{block}_{i}"), in_channels, out, 3, stride))
            in_channels = out
    for name, (base, kernel) in zip(_HEAD_NAMES, _HEAD):
        out = _channels(base, width)
        specs.append(ConvSpec(("head", name), in_channels, out, kernel, STRIDE))
        in_channels = out
    return tuple(specs)


def _ceil_div(size, divisor: int):
    """``ceil(size / divisor)`` of a symbolic size, written ``floor((size + divisor − 1) / divisor)``:
    a floor division of a positive number, which ONNX's integer ``Div`` (truncating) also computes
    when jax2onnx lowers the size expression into the graph."""
    return (size + divisor - 1) // divisor


def _pad_symbolic(x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` of symbolic ``H, W`` → ``[B, 16·ceil(H/16), 16·ceil(W/16), C]``, zeros
    at the bottom and right.

    Zeros of the constant width 15 are concatenated, then the result is cropped to the multiple
    of 16: ONNX converters (jax2onnx) convert ``lax.pad`` only at static shapes and build
    zeros only of sizes that some input has, while concatenation and a slice to a symbolic
    limit they convert; and jax.export proves ``16·ceil(H/16) ≤ H + 15`` in this form.
    """
    for axis in (1, 2):
        strip = list(x.shape)
        strip[axis] = _FEATURE_STRIDE - 1
        padded = jax.lax.concatenate([x, jnp.zeros(strip, x.dtype)], axis)
        limit = list(padded.shape)
        limit[axis] = _FEATURE_STRIDE * _ceil_div(x.shape[axis], _FEATURE_STRIDE)
        x = jax.lax.slice(padded, (0,) * x.ndim, limit)
    return x


def _upsample_nearest_x2(x: jax.Array) -> jax.Array:
    """``[B, h, w, C]`` → ``[B, 2h, 2w, C]``, each cell copied into a 2×2 block (PyTorch nearest)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _linear_align_corners(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    """Linear resampling of one axis with PyTorch's ``align_corners=True`` convention.

    Output index ``o`` reads the input at ``s = o · (n − 1) / (out_size − 1)`` (so the first and
    last samples coincide), interpolating between ``floor(s)`` and ``floor(s) + 1``.
    """
    n = x.shape[axis]
    frac_shape = [1] * x.ndim
    frac_shape[axis] = out_size
    if not _is_concrete(n):
        # At a symbolic size (export) the same rule traced, as an [out_size, n] matrix of the two
        # weights per output (converters such as jax2onnx lose gathers' symbolic sizes). The
        # scale's division happens in float32 instead of float64 and the matrix product may sum
        # in another order, so values may differ from the static path's by round-off. n = 1
        # needs no case of its own: every source index is then 0.
        scale = jnp.asarray(n - 1, jnp.float32) / jnp.maximum(jnp.asarray(out_size - 1, jnp.float32), 1.0)
        src = jax.lax.broadcasted_iota(jnp.float32, (out_size, 1), 0) * scale
        lo = jnp.minimum(jnp.floor(src), jnp.asarray(n - 1, jnp.float32))
        hi = jnp.minimum(lo + 1, jnp.asarray(n - 1, jnp.float32))
        frac = src - lo
        source = jax.lax.broadcasted_iota(jnp.float32, (1, n), 1)
        weights = (jnp.where(source == lo, 1 - frac, 0.0) + jnp.where(source == hi, frac, 0.0)).astype(x.dtype)
        moved = jnp.moveaxis(x, axis, -1)
        return jnp.moveaxis(jnp.einsum("...i,oi->...o", moved, weights), -1, axis)
    if n == 1:
        return jnp.repeat(x, out_size, axis=axis)
    # Indices and weights are static (they depend on shapes only); float32 as PyTorch computes them.
    scale = np.float32((n - 1) / (out_size - 1))
    src = np.arange(out_size, dtype=np.float32) * scale
    lo = np.minimum(np.floor(src).astype(np.int32), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = jnp.asarray((src - lo).reshape(frac_shape), dtype=x.dtype)
    return jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac


def _upsample_bilinear_x2(x: jax.Array) -> jax.Array:
    """``[B, h, w, C]`` → ``[B, 2h, 2w, C]``, bilinear with ``align_corners=True``
    (``F.upsample_bilinear(x, scale_factor=2)`` of BL and DM-Count)."""
    x = _linear_align_corners(x, 1, 2 * x.shape[1])
    return _linear_align_corners(x, 2, 2 * x.shape[2])


def _conv(spec: ConvSpec, dtype, kernel_init) -> nn.Conv:
    pad = spec.kernel_size // 2
    return nn.Conv(
        spec.out_channels,
        (spec.kernel_size, spec.kernel_size),
        padding=((pad, pad), (pad, pad)),
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init,
        bias_init=nn.initializers.zeros,
        name=spec.path[1],
    )


# torchvision's VGG initialisation (used when the features are trained from scratch, e.g. the
# narrow synthetic models): Kaiming normal, fan_out, ReLU gain; bias 0.
_FEATURE_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# The head of the references' VGG (GL's _initialize_weights): N(0, 0.01), bias 0.
_HEAD_INIT = nn.initializers.normal(stddev=0.01)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    """``[B, 2h, 2w, C]`` → ``[B, h, w, C]``, the maximum of each 2×2 block.

    At symbolic sizes, the maximum of the four strided slices (the same values): jax2onnx
    lowers ``nn.max_pool`` (its own operator) to wrong output sizes and ``lax.reduce_window``
    over ``[B, H, W, C]`` to a 4-d ONNX ``MaxPool`` that ONNX Runtime does not run.
    """
    if all(_is_concrete(size) for size in x.shape[1:3]):
        return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
    limit = x.shape
    blocks = [jax.lax.slice(x, (0, dy, dx, 0), limit, (1, 2, 2, 1)) for dy in (0, 1) for dx in (0, 1)]
    return jnp.maximum(jnp.maximum(blocks[0], blocks[1]), jnp.maximum(blocks[2], blocks[3]))


class _Features(nn.Module):
    """VGG19 "E" convolutions: ``[B, H, W, 3]`` → ``[B, H/16, W/16, 512·width]`` (H, W % 16 == 0)."""

    specs: tuple[ConvSpec, ...]
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        stride = 1
        for spec in self.specs:
            if spec.stride != stride:
                x = _max_pool_2x2(x)
                stride = spec.stride
            x = nn.relu(_conv(spec, self.dtype, _FEATURE_INIT)(x))
        return x


class _Head(nn.Module):
    """Regression head at stride 8: ``[B, h, w, 512·width]`` → ``[B, h, w, 1]`` (before the
    output activation)."""

    specs: tuple[ConvSpec, ...]
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for k, spec in enumerate(self.specs):
            x = _conv(spec, self.dtype, _HEAD_INIT)(x)
            if k < len(self.specs) - 1:
                x = nn.relu(x)
        return x


class VGG19Density(nn.Module):
    """VGG19 density regressor (GL / BL / DM-Count network): image → density map at stride 8.

    ``model.apply(variables, images)`` with ``images`` ``[B, H, W, 3]`` float32, RGB normalised
    with the ImageNet mean / std (:func:`gcc_jax.imagenet.normalize_images`), returns the density
    ``[B, ceil(H/8), ceil(W/8)]`` float32 (:func:`output_shape`); its sum over a map is the
    predicted count.

    Sizes that are not multiples of 16: the images are padded at the bottom and right with
    zeros — the ImageNet mean colour after normalisation — up to the next multiple of 16, the
    network runs on the padded images, and the map is cropped to ``ceil(H/8) × ceil(W/8)``.
    Padding at the far edges leaves cell ``(i, j)`` over pixels ``[8i, 8i+8) × [8j, 8j+8)``, the
    cell of the stride-8 ground truth, and the last partial row / column of cells is kept, so
    every head of the image falls in a cell. (The PyTorch references instead let the max-pools
    floor the size, dropping up to 15 bottom / right pixel rows and columns; on sizes that are
    multiples of 16 the two agree exactly.)

    Parameters (``variables["params"]``): ``features/conv{b}_{i}`` (16 convs, VGG naming) and
    ``head/conv1``, ``head/conv2``, ``head/conv3``, each ``{"kernel": [k, k, in, out] (HWIO),
    "bias": [out]}``, float32. Initialisation: features Kaiming normal (fan_out, as torchvision's
    VGG), head N(0, 0.01); biases 0. Start from ImageNet or official weights with
    :func:`gcc_jax.models.params_from_torch`.

    Attributes:
      width: channel multiplier, a positive multiple of 1/64 (1.0 = the published network;
        e.g. 1/16 gives a narrow model that runs on a CPU in milliseconds).
      upsample: ``"nearest"`` or ``"bilinear"`` (PyTorch ``align_corners=True``) ×2
        upsampling from stride 16 to 8.
      output: ``"abs"`` or ``"relu"`` applied to the head's output. (Which pair each loss's
        official code trains with: :func:`gcc_jax.models.official_head`.)
      dtype: computation dtype (e.g. ``jnp.bfloat16`` on accelerators); parameters stay float32
        and the returned density is float32.

    Example:
      >>> model = VGG19Density(width=1 / 16)
      >>> images = gcc_jax.imagenet.normalize_images(np.zeros((2, 64, 64, 3), np.uint8))
      >>> variables = model.init(jax.random.key(0), images)
      >>> model.apply(variables, images).shape
      (2, 8, 8)
    """

    width: float = 1.0
    upsample: str = "nearest"
    output: str = "abs"
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        _check_width(self.width)
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")
        if self.output not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output must be one of {OUTPUT_ACTIVATIONS}, got {self.output!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """Density maps of a batch of normalised images.

        Args:
          images: ``[B, H, W, 3]`` float, ImageNet-normalised RGB; any ``H, W ≥ 1``, also
            symbolic sizes of a shape-polymorphic ``jax.export``.

        Returns:
          ``[B, ceil(H/8), ceil(W/8)]`` float32, non-negative.

        Raises:
          ValueError: if ``images`` is not ``[B, H, W, 3]`` or a concrete size is below 1.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape [B, H, W, 3], got {tuple(images.shape)}")
        height, width = images.shape[1:3]
        if _is_concrete(height) and _is_concrete(width):
            out_h, out_w = output_shape(height, width)
            pad_h, pad_w = -height % _FEATURE_STRIDE, -width % _FEATURE_STRIDE
            x = jnp.asarray(images, self.dtype)
            if pad_h or pad_w:
                x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        else:
            # Symbolic sizes (jax.export with shape polymorphism, e.g. ``"(n, h, w, 3)"``):
            # jax.export already assumes every dimension ≥ 1, so only the rule remains.
            out_h, out_w = _ceil_div(height, STRIDE), _ceil_div(width, STRIDE)
            x = _pad_symbolic(jnp.asarray(images, self.dtype))

        specs = conv_layers(self.width)
        x = _Features(specs[:-3], self.dtype, name="features")(x)
        x = _upsample_nearest_x2(x) if self.upsample == "nearest" else _upsample_bilinear_x2(x)
        x = _Head(specs[-3:], self.dtype, name="head")(x)[..., 0]
        x = jnp.abs(x) if self.output == "abs" else nn.relu(x)
        # lax.slice, not indexing: a gather's bounds check on symbolic sizes is slow to decide.
        return jax.lax.slice(x, (0, 0, 0), (x.shape[0], out_h, out_w)).astype(jnp.float32)
