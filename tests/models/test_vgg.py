"""VGG19Density: shapes, the padding rule for sizes that are not multiples of 16, upsampling,
options and the layer table."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcc_jax.models import STRIDE, VGG19Density, conv_layers, output_shape
from gcc_jax.models._vgg import _upsample_bilinear_x2, _upsample_nearest_x2
from tolerances import EPS32, vgg_rtol

NARROW = 1 / 16
HEADS = [("nearest", "abs"), ("bilinear", "relu")]


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, height, width, 3)).astype(np.float32)


@pytest.mark.parametrize("upsample, output", HEADS)
@pytest.mark.parametrize("size", [(64, 48), (50, 70), (40, 56), (1, 1), (33, 17)])
def test_output_shapes(random_variables, size, upsample, output):
    model = VGG19Density(width=NARROW, upsample=upsample, output=output)
    out = jax.jit(model.apply)(random_variables(model), _images(2, *size))
    expected = (math.ceil(size[0] / 8), math.ceil(size[1] / 8))
    assert output_shape(*size) == expected
    assert out.shape == (2, *expected)
    assert out.dtype == jnp.float32
    assert np.all(np.asarray(out) >= 0)


@pytest.mark.parametrize("upsample, output", HEADS)
def test_sizes_not_multiple_of_16_equal_mean_colour_padding(random_variables, upsample, output):
    # The documented rule: pad bottom/right with 0 (the ImageNet mean after normalisation) to a
    # multiple of 16, run, crop to ceil(H/8) × ceil(W/8).
    model = VGG19Density(width=NARROW, upsample=upsample, output=output)
    variables = random_variables(model, seed=1)
    images = _images(2, 50, 70, seed=1)
    padded = np.zeros((2, 64, 80, 3), np.float32)
    padded[:, :50, :70] = images
    apply = jax.jit(model.apply)
    out = apply(variables, images)
    # Another input shape, another compiled program: tolerances.vgg_rtol of the largest output.
    np.testing.assert_allclose(out, apply(variables, padded)[:, :7, :9], rtol=0, atol=vgg_rtol(NARROW) * np.abs(out).max())


def test_every_pixel_has_a_cell():
    for height, width in [(1, 1), (8, 8), (9, 17), (511, 512), (513, 700)]:
        h, w = output_shape(height, width)
        # The last pixel's stride-8 cell exists, and no cell lies wholly outside the image.
        assert ((height - 1) // STRIDE, (width - 1) // STRIDE) == (h - 1, w - 1)


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "64"])
def test_output_shape_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="height must be a positive integer"):
        output_shape(bad, 64)


def test_jit_equals_eager(random_variables):
    model = VGG19Density(width=NARROW, upsample="bilinear", output="relu")
    variables = random_variables(model)
    images = _images(1, 32, 48)
    eager = model.apply(variables, images)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, images), eager, rtol=0, atol=vgg_rtol(NARROW) * np.abs(eager).max())


def test_bfloat16_compute_returns_float32(random_variables):
    model = VGG19Density(width=NARROW)
    variables = random_variables(model)
    images = _images(1, 32, 32)
    low = jax.jit(VGG19Density(width=NARROW, dtype=jnp.bfloat16).apply)(variables, images)
    assert low.dtype == jnp.float32
    assert jax.tree.leaves(variables)[0].dtype == np.float32
    full = jax.jit(model.apply)(variables, images)
    # Not round-off between orders but bfloat16's accuracy: each layer rounds its inputs,
    # weights and output to 8 bits (u = 2⁻⁹ ≈ 2e-3, 3 roundings), and the 19 layers' relative
    # errors add in quadrature on the activations' scale: 2·3u·√19 ≈ 0.05 of the largest output.
    assert float(jnp.max(jnp.abs(low - full))) < 2 * 3 * 2.0**-9 * math.sqrt(19) * float(jnp.max(jnp.abs(full)))


def _bilinear_align_corners_reference(x):
    """PyTorch's align_corners=True ×2 written as a plain loop: output o reads input o·(n−1)/(2n−1)."""
    b, h, w, c = x.shape

    def axis_weights(n):
        m = np.zeros((2 * n, n))
        for o in range(2 * n):
            s = o * (n - 1) / (2 * n - 1) if n > 1 else 0.0
            lo = min(int(np.floor(s)), n - 1)
            hi = min(lo + 1, n - 1)
            m[o, lo] += 1 - (s - lo)
            m[o, hi] += s - lo
        return m

    return np.einsum("ph,qw,bhwc->bpqc", axis_weights(h), axis_weights(w), x.astype(np.float64))


@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 3, 5, 2), (1, 8, 4, 3)])
def test_bilinear_upsampling_is_align_corners(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = np.asarray(_upsample_bilinear_x2(jnp.asarray(x)))
    # Two-point interpolation per axis with float32 weights against float64: a few roundings.
    np.testing.assert_allclose(out, _bilinear_align_corners_reference(x), rtol=8 * EPS32, atol=8 * EPS32 * np.abs(x).max())
    # Corners coincide with the input's corners (the align_corners property): weight 1 and 0.
    np.testing.assert_allclose(out[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]], rtol=2 * EPS32)


def test_bilinear_upsampling_reproduces_a_linear_ramp():
    n = 6
    ramp = np.broadcast_to(np.arange(n, dtype=np.float32)[None, :, None, None], (1, n, 3, 1))
    out = np.asarray(_upsample_bilinear_x2(jnp.asarray(ramp)))
    np.testing.assert_allclose(out[0, :, 1, 0], np.arange(2 * n) * (n - 1) / (2 * n - 1), rtol=8 * EPS32, atol=8 * EPS32 * n)


def test_nearest_upsampling_copies_each_cell_into_a_2x2_block():
    x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    out = np.asarray(_upsample_nearest_x2(jnp.asarray(x)))
    assert out.shape == (2, 6, 8, 2)
    for di in (0, 1):
        for dj in (0, 1):
            np.testing.assert_array_equal(out[:, di::2, dj::2], x)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"width": 0}, "width must be a positive number"),
        ({"width": -1.0}, "width must be a positive number"),
        ({"width": 0.3}, "multiple of 1/64"),
        ({"width": "1"}, "width must be a positive number"),
        ({"upsample": "bicubic"}, "upsample must be one of"),
        ({"output": "sigmoid"}, "output must be one of"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        VGG19Density(**options)


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 32, 32, 1), (32, 32, 3)])
def test_invalid_image_shapes(random_variables, shape):
    model = VGG19Density(width=NARROW)
    with pytest.raises(ValueError, match=r"images must have shape \[B, H, W, 3\]"):
        model.apply(random_variables(model), np.zeros(shape, np.float32))


def test_layer_table_is_vgg19_configuration_e():
    # Simonyan & Zisserman, Table 1, column E (conv3-64 ×2, -128 ×2, -256 ×4, -512 ×4, -512 ×4),
    # then the head 256, 128, 1.
    outs = [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8 + [256, 128, 1]
    strides = [1] * 2 + [2] * 2 + [4] * 4 + [8] * 4 + [16] * 4 + [8] * 3
    specs = conv_layers(1.0)
    assert [s.out_channels for s in specs] == outs
    assert [s.in_channels for s in specs] == [3] + outs[:-1]
    assert [s.stride for s in specs] == strides
    assert [s.kernel_size for s in specs] == [3] * 18 + [1]
    narrow = conv_layers(NARROW)
    assert [s.out_channels for s in narrow] == [o // 16 for o in outs[:-1]] + [1]
