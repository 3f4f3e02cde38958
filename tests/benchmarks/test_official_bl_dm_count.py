"""The benchmarks' official-style torch BL and DM-Count reproduce the official fixtures, and the
torch L2 baseline equals gcc_jax's L2, so speed ratios against them compare the same computation."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.official_bl import official_bl_value_and_grad  # noqa: E402
from benchmarks.official_dm_count import discrete_map, official_dm_count_value_and_grad  # noqa: E402
from benchmarks.official_l2 import torch_l2_value_and_grad  # noqa: E402
from tolerances import EPS32, bl_rtol, dm_rtol, probable_rtol  # noqa: E402


@pytest.fixture(scope="module")
def reference(data_dir):
    return dict(np.load(data_dir / "bl_dmcount_reference.npz"))


def unpadded(points, mask):
    return [p[m] for p, m in zip(points, mask)]


@pytest.mark.parametrize("index", range(4))
def test_official_bl_matches_fixture(reference, index):
    key = f"bl{index}/"
    mask = reference[key + "point_mask"]
    loss, grad = official_bl_value_and_grad(
        reference[key + "density"],
        unpadded(reference[key + "points"], mask),
        st_sizes=reference[key + "st_sizes"],
        targets=unpadded(reference[key + "targets"], mask),
        sigma=float(reference[key + "sigma"]),
        use_background=bool(reference[key + "use_bg"]),
        background_ratio=float(reference[key + "bg_ratio"]),
    )
    # The same torch computation as the fixtures', possibly on another CPU (tests/tolerances.py).
    density = reference[key + "density"]
    rtol = bl_rtol(heads=mask.shape[1], cells=density[0].size)
    parts = (reference[key + "targets"][mask].sum() + density.sum()) / len(density)
    np.testing.assert_allclose(loss, reference[key + "loss"], rtol=rtol, atol=rtol * parts)
    ref_grad = reference[key + "grad"]
    np.testing.assert_allclose(grad, ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())


@pytest.mark.parametrize("index", range(3))
def test_official_dm_count_matches_fixture(reference, index):
    key = f"dm{index}/"
    density = reference[key + "density"]
    points = unpadded(reference[key + "points"], reference[key + "point_mask"])
    loss, grad, terms = official_dm_count_value_and_grad(
        density, points, discrete=reference[key + "discrete"],
        wot=float(reference[key + "wot"]), wtv=float(reference[key + "wtv"]),
        reg=float(reference[key + "reg"]), num_iters=int(reference[key + "iters"]),
    )  # fmt: skip
    # The same torch computation as the fixtures', possibly on another CPU (tests/tolerances.py).
    mask = reference[key + "point_mask"]
    rtol = dm_rtol(cells=density[0].size, heads=mask.shape[1], iters=int(reference[key + "iters"]))
    surrogate_scale = abs(float(reference[key + "ot_obj"]))
    parts = float(reference[key + "wot"]) * surrogate_scale + (mask.sum() + density.sum()) / len(density)
    np.testing.assert_allclose(loss, reference[key + "total"], rtol=rtol, atol=rtol * parts)
    for name in ("wd", "ot_obj", "count", "tv"):
        np.testing.assert_allclose(terms[name], reference[key + name], rtol=rtol, atol=rtol * parts, err_msg=name)
    # The surrogate's value is round-off around 0 (its gradient is the point): absolute check.
    assert abs(terms["ot"] - float(reference[key + "ot_loss"])) <= rtol * surrogate_scale
    ref_grad = reference[key + "grad"]
    np.testing.assert_allclose(grad, ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())


@pytest.mark.parametrize("index", range(3))
def test_discrete_map_matches_fixture(reference, index):
    key = f"dm{index}/"
    density = reference[key + "density"]
    _, h, w = density.shape
    stride = int(reference[key + "crop"]) // h
    for points, expected in zip(unpadded(reference[key + "points"], reference[key + "point_mask"]), reference[key + "discrete"]):
        np.testing.assert_array_equal(discrete_map(points, height=h, width=w, stride=stride), expected)


def test_torch_l2_equals_gcc_jax_l2():
    import jax

    from gcc_jax.losses import l2_loss

    rng = np.random.default_rng(0)
    density = rng.uniform(0.0, 0.05, (3, 16, 16)).astype(np.float32)
    counts = (7, 0, 12)
    points = np.zeros((3, 12, 2), np.float32)
    mask = np.arange(12)[None, :] < np.asarray(counts)[:, None]
    points[mask] = rng.uniform(0.0, 128.0, (int(mask.sum()), 2))
    loss, grad = torch_l2_value_and_grad(density, unpadded(points, mask), sigma=6.0)
    jax_loss, jax_grad = jax.value_and_grad(lambda d: l2_loss(d, points, mask, sigma=6.0)[0])(density)
    # Kernels normalised over 128 pixels per axis, ≤ 12 heads per cell, 256 cells summed.
    rtol = probable_rtol(128 + 12 + 256) + 4 * EPS32
    np.testing.assert_allclose(loss, float(jax_loss), rtol=rtol)
    np.testing.assert_allclose(grad, np.asarray(jax_grad), rtol=2 * rtol, atol=2 * rtol * np.abs(grad).max())
