"""Inputs shared by the loss tests: random batches, edge cases and malformed shapes."""

import numpy as np


def random_inputs(rng, *, batch=3, size=16, stride=8, max_points=12, counts=(5, 0, 12)):
    """``density`` ``[batch, size, size]`` in [0, 0.05), ``points`` ``[batch, max_points, 2]``
    uniform over the ``size·stride`` pixel crop, ``point_mask`` with ``counts`` real points."""
    density = rng.uniform(0.0, 0.05, (batch, size, size)).astype(np.float32)
    points = rng.uniform(0.0, size * stride, (batch, max_points, 2)).astype(np.float32)
    mask = np.arange(max_points)[None, :] < np.asarray(counts)[:, None]
    return density, points, mask


def random_batch(seed, **options):
    """:func:`random_inputs` from a fresh generator seeded with ``seed``."""
    return random_inputs(np.random.default_rng(seed), **options)


# (density [2, 8, 8], points of both images [2, 2], mask [2]) for a 64-pixel crop at stride 8.
EDGE_CASES = {
    "zero density": (np.zeros((2, 8, 8)), [[10.0, 10.0], [30.0, 50.0]], [True, True]),
    "all padding": (np.full((2, 8, 8), 0.01), [[10.0, 10.0], [30.0, 50.0]], [False, False]),
    "one point": (np.full((2, 8, 8), 0.01), [[10.0, 10.0], [0.0, 0.0]], [True, False]),
    "on and outside the border": (np.full((2, 8, 8), 0.01), [[0.0, 64.0], [-1.5, 65.5]], [True, True]),
    "duplicate points": (np.full((2, 8, 8), 0.01), [[20.0, 20.0], [20.0, 20.0]], [True, True]),
}

# (shapes of density, points, point_mask), the argument the error message must name.
BAD_SHAPES = [
    (((3, 16), (3, 12, 2), (3, 12)), "density"),
    (((3, 16, 16), (3, 12, 3), (3, 12)), "points"),
    (((3, 16, 16), (3, 12, 2), (3, 11)), "point_mask"),
    (((2, 16, 16), (3, 12, 2), (3, 12)), "batch size"),
]


def assert_all_finite(loss, terms, grad):
    """The loss, every per-image term and the gradient are finite."""
    assert np.isfinite(loss)
    for name, value in terms.items():
        assert np.all(np.isfinite(value)), name
    assert np.all(np.isfinite(grad))
