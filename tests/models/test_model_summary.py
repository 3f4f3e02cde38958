"""Parameter count and FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcc_jax.models import VGG19Density, forward_flops, model_summary, param_count
from gcc_jax.models._summary import main

# VGG19 configuration E then the head, as (in, out, kernel, stride), written out independently.
_E = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
_STRIDES = [1, 1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16]


def _layers(width):
    outs = [int(c * width) for c in _E] + [int(256 * width), int(128 * width), 1]
    ins = [3] + outs[:-1]
    kernels = [3] * 18 + [1]
    return list(zip(ins, outs, kernels, _STRIDES + [8, 8, 8]))


@pytest.mark.parametrize("width", [1.0, 0.25])
def test_param_count_of_abstract_init(width):
    model = VGG19Density(width=width)
    abstract = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
    expected = sum(k * k * i * o + o for i, o, k, _ in _layers(width))
    assert param_count(abstract) == expected
    assert param_count(abstract["params"]) == expected


@pytest.mark.parametrize("width, size", [(1.0, (512, 512)), (0.25, (100, 60))])
def test_forward_flops_is_twice_the_conv_multiply_adds(width, size):
    h16, w16 = -(-size[0] // 16) * 16, -(-size[1] // 16) * 16
    expected = sum(2 * k * k * i * o * (h16 // s) * (w16 // s) for i, o, k, s in _layers(width))
    assert forward_flops(VGG19Density(width=width), height=size[0], width=size[1]) == expected


def test_forward_flops_agrees_with_xla_cost_analysis():
    # XLA counts only the kernel taps that land inside the image (a 3×3 'same' conv on n pixels
    # has 3n − 2 valid taps per axis) plus the element-wise ops; correct for the first, bound the second.
    model = VGG19Density(width=1 / 8)
    height, width = 64, 96
    abstract = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
    cost = jax.jit(model.apply).lower(abstract, jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    valid_taps = 0
    for i, o, k, s in _layers(1 / 8):
        h, w = height // s, width // s
        taps_h, taps_w = (3 * h - 2, 3 * w - 2) if k == 3 else (h, w)
        valid_taps += 2 * taps_h * taps_w * i * o
    assert valid_taps <= cost["flops"] <= 1.03 * valid_taps
    full = forward_flops(model, height=height, width=width)
    assert valid_taps < full < 1.3 * valid_taps


def test_model_summary_and_cli(capsys):
    text = model_summary(VGG19Density(width=0.25), height=64, width=64)
    assert "features/conv1_1" in text and "head/conv3" in text
    total = sum(k * k * i * o + o for i, o, k, _ in _layers(0.25))
    assert f"{total:,}" in text.splitlines()[-1]
    main(["--width", "0.25", "--size", "64", "64"])
    printed = capsys.readouterr().out
    assert f"parameters in model.init: {total:,}" in printed
