"""BL and DM-Count equal the official computations (benchmarks/official_*.py, themselves checked
against the official fixtures in tests/benchmarks/) beyond the fixtures: other hyper-parameters,
strides, non-square maps, targets, empty images and heads on the crop border. Heads lie in
``[0, crop]`` as the official crop code keeps them (gcc_jax also defines heads outside, which
the official discrete map would wrap around)."""

import jax
import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks.official_bl import official_bl_value_and_grad  # noqa: E402
from benchmarks.official_dm_count import official_dm_count_value_and_grad  # noqa: E402
from gcc_jax.losses import bayesian_loss, dm_count_loss  # noqa: E402
from tolerances import bl_rtol, dm_rtol  # noqa: E402

# (height, width, stride, heads per image); 0 heads = an empty image.
LAYOUTS = {
    "square": (16, 16, 8, (9, 30, 1)),
    "non-square, stride 4": (12, 20, 4, (25, 3, 14)),
    "with an empty image": (10, 14, 8, (0, 17, 6)),
}


def random_case(layout, seed):
    height, width, stride, counts = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.0, 0.05, (len(counts), height, width)).astype(np.float32)
    max_points = max(counts) + 3  # padding the losses must ignore
    points = np.zeros((len(counts), max_points, 2), np.float32)
    mask = np.arange(max_points)[None, :] < np.asarray(counts)[:, None]
    extent = np.array([width * stride, height * stride], np.float32)
    points[mask] = rng.uniform(0.0, 1.0, (int(mask.sum()), 2)) * extent
    image, slot = mask.nonzero()
    points[image[0], slot[0]] = extent  # heads exactly on the far corner and on the near one
    points[image[-1], slot[-1]] = 0.0
    return density, points, mask, stride


def unpadded(array, mask):
    return [a[m] for a, m in zip(array, mask)]


def assert_close(ours, official, *, rtol, parts):
    """Loss within ``rtol`` (absolutely ``rtol · parts`` where it subtracts near-equal parts of
    size ``parts``), gradient within ``2·rtol`` (one more pass; absolutely on the scale of the
    largest entry where a cell's signed sum cancels)."""
    (loss, grad), (ref_loss, ref_grad) = ours, official
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol * parts)
    np.testing.assert_allclose(grad, ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())


BL_SETTINGS = [
    dict(sigma=8.0, use_background=True, background_ratio=1.0, background="2021"),
    dict(sigma=4.0, use_background=True, background_ratio=0.15, background="2019"),
    dict(sigma=15.0, use_background=False),
]


@pytest.mark.parametrize("settings", BL_SETTINGS, ids=["bl+2021", "bl+2019", "no-background"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("with_targets", [False, True], ids=["unit", "targets"])
def test_bayesian_loss_equals_official(layout, settings, with_targets):
    density, points, mask, stride = random_case(layout, seed=len(layout))
    rng = np.random.default_rng(1)
    st_sizes = rng.uniform(200.0, 900.0, len(density)).astype(np.float32)
    targets = rng.uniform(0.2, 1.0, mask.shape).astype(np.float32) if with_targets else None
    ours = jax.value_and_grad(
        lambda d: bayesian_loss(d, points, mask, st_size=st_sizes, targets=targets, stride=stride, **settings)[0]
    )(density)
    official = official_bl_value_and_grad(
        density, unpadded(points, mask), st_sizes=st_sizes,
        targets=None if targets is None else unpadded(targets, mask), stride=stride, **settings,
    )  # fmt: skip
    parts = (mask.sum() if targets is None else targets[mask].sum()) + density.sum()
    assert_close(ours, official, rtol=bl_rtol(heads=mask.shape[1], cells=density[0].size), parts=parts / len(density))


DM_SETTINGS = [
    dict(wot=0.1, wtv=0.01, reg=10.0, num_iters=100),
    dict(wot=0.5, wtv=0.1, reg=1.0, num_iters=40),
]


@pytest.mark.parametrize("settings", DM_SETTINGS, ids=["defaults", "reg1-iters40"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_dm_count_loss_equals_official(layout, settings):
    density, points, mask, stride = random_case(layout, seed=len(layout) + 7)
    (value, terms), grad = jax.value_and_grad(
        lambda d: dm_count_loss(d, points, mask, stride=stride, **settings), has_aux=True
    )(density)
    loss, ref_grad, _ = official_dm_count_value_and_grad(density, unpadded(points, mask), stride=stride, **settings)
    rtol = dm_rtol(cells=density[0].size, heads=mask.shape[1], iters=settings["num_iters"])
    parts = settings["wot"] * np.abs(terms["ot_objective"]).sum() + (mask.sum() + density.sum()) / len(density)
    assert_close((value, grad), (loss, ref_grad), rtol=rtol, parts=parts)
