"""Tests of the Bayesian Loss against the official implementation and its invariances."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from gcc_jax.losses import bayesian_loss
from gcc_jax.losses import _bayesian
from loss_cases import BAD_SHAPES, EDGE_CASES as COMMON_EDGE_CASES, assert_all_finite, random_inputs
from tolerances import EPS32, bl_rtol, sum_rtol

NUM_CASES = 4


@pytest.fixture(scope="module")
def reference(data_dir):
    return dict(np.load(data_dir / "bl_dmcount_reference.npz"))


def bl_atol(rtol, targets, density):
    """``L = Σ_j |t_j − E_j| + E_bg`` differences of near-equal parts: its absolute error is
    ``rtol`` times the size of the parts, ``Σ t + Σ A`` per image, averaged over the batch."""
    return rtol * (np.sum(targets) + np.sum(density)) / len(density)


# The random batches: 16 × 16 cells, up to 32 head slots.
RTOL = bl_rtol(heads=32, cells=256)


def case_inputs(reference, index):
    key = f"bl{index}/"
    arrays = {name: reference[key + name] for name in ("density", "points", "point_mask")}
    params = dict(
        st_size=reference[key + "st_sizes"],
        targets=reference[key + "targets"],
        sigma=float(reference[key + "sigma"]),
        use_background=bool(reference[key + "use_bg"]),
        background_ratio=float(reference[key + "bg_ratio"]),
    )
    return arrays, params


def random_batch(seed, *, batch=3, size=16, stride=8, max_points=12, counts=(5, 0, 12)):
    """:func:`loss_cases.random_inputs` plus ``st_size`` ``[batch]`` and ``targets``."""
    rng = np.random.default_rng(seed)
    crop = size * stride
    density, points, mask = random_inputs(rng, batch=batch, size=size, stride=stride, max_points=max_points,
                                          counts=counts)
    st_size = rng.uniform(crop, 4 * crop, batch).astype(np.float32)
    targets = rng.uniform(0.3, 1.0, (batch, max_points)).astype(np.float32)
    return density, points, mask, st_size, targets


def numpy_bayesian_loss(density, points, mask, st_size, targets, *, sigma, stride, use_background,
                        background_ratio, background):
    """Independent float64 transcription of the BL definition in docs/losses.md, one image and one head at a time."""
    losses = []
    for b in range(density.shape[0]):
        h, w = density.shape[1:]
        cells = np.stack(np.meshgrid((np.arange(w) + 0.5) * stride, (np.arange(h) + 0.5) * stride),
                         -1).reshape(-1, 2)
        flat = density[b].reshape(-1).astype(np.float64)
        heads = points[b][mask[b]].astype(np.float64)
        if len(heads) == 0:
            losses.append(abs(flat.sum()))
            continue
        dist = np.array([((cells - p) ** 2).sum(1) for p in heads])
        wanted = list(targets[b][mask[b]])
        if use_background:
            nearest = dist.min(0)
            d = float(st_size[b]) * background_ratio
            bg = d * d / (nearest + 1e-5) if background == "2021" else (d - np.sqrt(nearest)) ** 2
            dist = np.vstack([dist, bg])
            wanted.append(0.0)
        logits = -dist / (2 * sigma**2)
        prob = np.exp(logits - logits.max(0))
        prob /= prob.sum(0)
        losses.append(np.abs(np.asarray(wanted) - prob @ flat).sum())
    return np.asarray(losses)


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_matches_official_loss_and_gradient(reference, index):
    arrays, params = case_inputs(reference, index)
    key = f"bl{index}/"

    def loss_fn(d):
        return bayesian_loss(d, arrays["points"], arrays["point_mask"], **params)[0]

    loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(arrays["density"]))
    density, points = arrays["density"], arrays["points"]
    rtol = bl_rtol(heads=points.shape[1], cells=density[0].size)
    np.testing.assert_allclose(loss, reference[key + "loss"], rtol=rtol,
                               atol=bl_atol(rtol, params["targets"], density))
    ref_grad = reference[key + "grad"]
    # The gradient of a cell is a signed sum of posteriors; where those nearly cancel, round-off
    # of the 0.5-sized terms shows, hence the absolute part.
    np.testing.assert_allclose(grad, ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())


@pytest.mark.parametrize(
    "params",
    [
        dict(sigma=8.0, use_background=True, background_ratio=1.0, background="2021"),
        dict(sigma=8.0, use_background=True, background_ratio=0.15, background="2019"),
        dict(sigma=5.0, use_background=True, background_ratio=0.1, background="2019"),
        dict(sigma=12.0, use_background=False, background_ratio=1.0, background="2021"),
    ],
)
def test_matches_float64_transcription(params):
    with jax.enable_x64(True):
        density, points, mask, st_size, targets = random_batch(11, size=8, stride=4, counts=(5, 0, 9))
        density = density.astype(np.float64)
        loss, terms = bayesian_loss(density, points.astype(np.float64), mask, st_size=st_size,
                                    targets=targets, stride=4, **params)
        expected = numpy_bayesian_loss(density, points, mask, st_size, targets, stride=4, **params)
        # float64 on both sides (u = 1.1e-16): the same bound as bl_rtol scaled to float64 is
        # ~1e-13; 1e-9 leaves room for the transcription's other summation order.
        np.testing.assert_allclose(terms["total"], expected, rtol=1e-9)
        np.testing.assert_allclose(loss, expected.mean(), rtol=1e-9)


def test_default_targets_are_one():
    density, points, mask, st_size, _ = random_batch(12)
    ones = np.ones(mask.shape, np.float32)
    default = bayesian_loss(density, points, mask, st_size=st_size)[1]["total"]
    explicit = bayesian_loss(density, points, mask, st_size=st_size, targets=ones)[1]["total"]
    np.testing.assert_array_equal(default, explicit)


def test_empty_images():
    density, points, mask, st_size, _ = random_batch(13, counts=(0, 0, 0))
    for use_background in (True, False):
        for background in ("2021", "2019"):
            def loss_fn(d):
                return bayesian_loss(d, points, mask, st_size=st_size, use_background=use_background,
                                     background=background, background_ratio=0.15)

            (loss, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(density))
            # |Σ A| over 256 positive cells in some float32 order; the gradient is sign(Σ A) / B.
            np.testing.assert_allclose(terms["total"], density.sum(axis=(1, 2), dtype=np.float64), rtol=sum_rtol(256))
            np.testing.assert_allclose(grad, np.full_like(density, 1 / 3), rtol=EPS32)


def test_zero_subgradient_like_pytorch():
    # Zero density in an empty image: |0 − 0| has gradient 0 in PyTorch (jnp.abs would give 1).
    density = jnp.zeros((2, 4, 4))
    points = jnp.zeros((2, 3, 2))
    mask = jnp.asarray([[False] * 3, [True, False, False]])
    grad = jax.grad(lambda d: bayesian_loss(d, points, mask, st_size=jnp.full(2, 64.0))[0])(density)
    np.testing.assert_array_equal(grad[0], 0.0)


def test_zero_point_slots():
    density = np.ones((2, 4, 4), np.float32)
    loss, terms = bayesian_loss(density, np.zeros((2, 0, 2)), np.zeros((2, 0), bool), st_size=64.0)
    np.testing.assert_allclose(terms["total"], [16.0, 16.0])
    np.testing.assert_allclose(loss, 16.0)


def test_jit_equals_eager():
    density, points, mask, st_size, targets = random_batch(14)
    kwargs = dict(targets=targets, background="2019", background_ratio=0.15)
    jitted = jax.jit(lambda d, x, m, s: bayesian_loss(d, x, m, st_size=s, **kwargs))(
        density, points, mask, st_size
    )
    with jax.disable_jit():
        eager = bayesian_loss(density, points, mask, st_size=st_size, **kwargs)
    atol = bl_atol(RTOL, targets, density)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=RTOL, atol=atol)
    np.testing.assert_allclose(jitted[1]["total"], eager[1]["total"], rtol=RTOL, atol=atol * len(density))


def test_batch_equals_loop_over_images():
    density, points, mask, st_size, targets = random_batch(15)
    _, terms = bayesian_loss(density, points, mask, st_size=st_size, targets=targets)
    for b in range(density.shape[0]):
        count = int(mask[b].sum())
        _, single = bayesian_loss(density[b:b + 1], points[b:b + 1, :count], mask[b:b + 1, :count],
                                  st_size=st_size[b:b + 1], targets=targets[b:b + 1, :count])
        np.testing.assert_allclose(terms["total"][b], single["total"][0], rtol=RTOL,
                                   atol=bl_atol(RTOL, targets[b], density[b:b + 1]))


@pytest.mark.parametrize("background", ["2021", "2019"])
def test_padding_and_permutation_change_nothing(background):
    density, points, mask, st_size, targets = random_batch(16, counts=(5, 3, 12))

    def value_and_grad(x, m, t):
        return jax.value_and_grad(
            lambda a: bayesian_loss(a, x, m, st_size=st_size, targets=t, background=background,
                                    background_ratio=0.15),
            has_aux=True,
        )(jnp.asarray(density))

    (loss, terms), grad = value_and_grad(points, mask, targets)
    junk = np.full((3, 20, 2), np.nan, np.float32)
    padded = value_and_grad(np.concatenate([points, junk], 1),
                            np.concatenate([mask, np.zeros((3, 20), bool)], 1),
                            np.concatenate([targets, np.full((3, 20), 7.0, np.float32)], 1))
    perm = np.random.default_rng(0).permutation(points.shape[1])
    permuted = value_and_grad(points[:, perm], mask[:, perm], targets[:, perm])
    atol = bl_atol(RTOL, targets, density)
    for (other_loss, other_terms), other_grad in (padded, permuted):
        np.testing.assert_allclose(other_loss, loss, rtol=RTOL, atol=atol)
        np.testing.assert_allclose(other_terms["total"], terms["total"], rtol=RTOL, atol=atol * len(density))
        np.testing.assert_allclose(other_grad, grad, rtol=2 * RTOL, atol=2 * RTOL * np.abs(grad).max())


EDGE_CASES = {
    **COMMON_EDGE_CASES,
    "head on a cell centre": (np.full((2, 8, 8), 0.01), [[4.0, 4.0], [12.0, 4.0]], [True, True]),
}


@pytest.mark.parametrize("background", ["2021", "2019"])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_are_finite(case, background):
    density, pts, msk = EDGE_CASES[case]
    density = jnp.asarray(density, jnp.float32)
    points = jnp.broadcast_to(jnp.asarray(pts, jnp.float32), (2, 2, 2))
    mask = jnp.broadcast_to(jnp.asarray(msk), (2, 2))
    (loss, terms), grad = jax.value_and_grad(
        lambda d: bayesian_loss(d, points, mask, st_size=jnp.asarray([64.0, 300.0]),
                                background=background, background_ratio=0.15),
        has_aux=True,
    )(density)
    assert_all_finite(loss, terms, grad)


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        density = jnp.asarray(rng.uniform(0.01, 0.1, (2, 4, 4)))
        points = jnp.asarray([[[5.0, 7.0], [20.0, 25.0], [0.0, 0.0]], [[9.0, 3.0], [0.0, 0.0], [0.0, 0.0]]])
        mask = jnp.asarray([[True, True, False], [True, False, False]])
        for background in ("2021", "2019"):
            def loss_fn(d):
                return bayesian_loss(d, points, mask, st_size=jnp.asarray([40.0, 50.0]),
                                     background=background, background_ratio=0.5)[0]

            # float64 central differences: truncation O(h²) of the curvature, round-off 1e-16/h.
            check_grads(loss_fn, (density,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-8.0), "sigma"),
        (dict(stride=0), "stride"),
        (dict(background_ratio=-1.0), "background_ratio"),
        (dict(background="2020"), "background"),
        (dict(use_background="yes"), "use_background"),
        (dict(st_size=np.ones(2)), "st_size"),
        (dict(targets=np.ones((3, 11))), "targets"),
    ],
)
def test_bad_hyper_parameters_raise(kwargs, message):
    density, points, mask, st_size, _ = random_batch(10)
    kwargs = {"st_size": st_size, **kwargs}
    with pytest.raises(ValueError, match=message):
        bayesian_loss(density, points, mask, **kwargs)


@pytest.mark.parametrize("shapes, message", BAD_SHAPES)
def test_bad_shapes_raise(shapes, message):
    density, points, mask = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        bayesian_loss(density, points, mask.astype(bool), st_size=64.0)


def test_one_compilation_per_shape():
    density, points, mask, st_size, targets = random_batch(17, batch=2, size=5, max_points=7, counts=(3, 7))
    bayesian_loss(density, points, mask, st_size=st_size, targets=targets)
    compiled = _bayesian._batch_losses._cache_size()
    bayesian_loss(density * 2, points + 1, ~mask, st_size=st_size * 2, targets=targets / 2)
    bayesian_loss(density, points, mask, st_size=300.0)
    assert _bayesian._batch_losses._cache_size() == compiled
