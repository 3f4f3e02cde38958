"""GL against the official computation (PyTorch + geomloss) beyond the fixture cases: other
hyper-parameters, non-square maps, empty images, zero-density cells, points outside the crop,
both implementations. Skips unless torch and geomloss are installed (CI installs both)."""

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("geomloss")

from benchmarks.official_gl import official_gl_value_and_grad  # noqa: E402
from gcc_jax.losses import generalized_loss  # noqa: E402
from tolerances import gl_rtol  # noqa: E402

SETTINGS = [
    dict(cost="per", blur=0.001, reach=0.5, scaling=0.5, p=1, tau=0.1),
    dict(cost="exp", blur=0.01, reach=0.1, scaling=0.7, p=1, tau=0.3, scale=0.3),
    dict(cost="per", blur=0.05, reach=1.0, scaling=0.8, p=2, tau=0.1),
    dict(cost="exp", blur=0.005, reach=0.2, scaling=0.5, p=1, tau=0.1, d_point="l2", d_pixel="l1"),
]


@pytest.mark.parametrize("implementation", ["chunked", "dense"])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_matches_official_computation(setting, implementation):
    params = SETTINGS[setting]
    rng = np.random.default_rng(setting)
    h, w, crop, counts = 12, 20, 160, (3, 0, 57, 90)
    density = rng.uniform(0, 0.05, (len(counts), h, w)).astype(np.float32)
    density[0, :3] = 0.0
    points = [
        np.c_[rng.uniform(-5, w * 8 + 5, m), rng.uniform(-5, h * 8 + 5, m)].astype(np.float32)
        for m in counts
    ]
    padded = np.zeros((len(counts), max(counts) + 5, 2), np.float32)
    mask = np.zeros(padded.shape[:2], bool)
    for b, p in enumerate(points):
        padded[b, : len(p)], mask[b, : len(p)] = p, True
    ref_loss, ref_grad = official_gl_value_and_grad(density, points, crop_size=crop, **params)
    (loss, _), grad = jax.value_and_grad(
        lambda d: generalized_loss(d, padded, mask, crop_size=crop, implementation=implementation, **params),
        has_aux=True,
    )(density)
    rtol = gl_rtol(cells=h * w, points=padded.shape[1], blur=params["blur"], scaling=params["scaling"], p=params["p"])
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    # A cell's gradient is a signed sum over its plan row: one more pass (2·rtol), and an
    # absolute part on the scale of the largest gradient where the signs cancel.
    np.testing.assert_allclose(grad, ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())



def test_default_batch_loss_is_the_official_trainers():
    """GL's trainer adds each image's entropy term undivided: our default reduction gives its
    batch loss and gradient, the per-image mean does not (few heads on a small map make the
    entropy term large enough to tell the two apart well beyond round-off)."""
    rng = np.random.default_rng(7)
    counts, crop = (2, 3, 0), 48
    density = rng.uniform(0.02, 0.2, (len(counts), 6, 6)).astype(np.float32)
    points = [rng.uniform(0, crop, (m, 2)).astype(np.float32) for m in counts]
    padded = np.zeros((len(counts), max(counts), 2), np.float32)
    mask = np.zeros(padded.shape[:2], bool)
    for b, p in enumerate(points):
        padded[b, : len(p)], mask[b, : len(p)] = p, True
    ref_loss, ref_grad = official_gl_value_and_grad(density, points, crop_size=crop)

    def ours(reduction):
        return jax.value_and_grad(
            lambda d: generalized_loss(d, padded, mask, crop_size=crop, batch_reduction=reduction)[0]
        )(density)

    loss, grad = ours("reference")
    rtol = gl_rtol(cells=36, points=3)
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    np.testing.assert_allclose(grad, ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())
    mean_loss, _ = ours("mean")
    # The mean reduction is farther from the official loss than round-off can explain (rtol
    # bounds two evaluations of the same loss; twice that leaves no doubt).
    assert abs(mean_loss - ref_loss) > 2 * rtol * abs(ref_loss)
