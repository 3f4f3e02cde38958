"""Fixtures for the model tests."""

import jax
import numpy as np
import pytest


@pytest.fixture
def random_variables():
    """``make(model, seed=0)`` → random variables for ``model`` without running ``model.init``.

    Compiling ``model.init`` costs seconds on a shared CPU (one threefry kernel per parameter
    shape); numpy fills the abstract tree instantly. Kernels are He-scaled (fan-in) so the
    activations stay O(1) through the 19 layers; biases are small and random.
    """

    def make(model, seed=0):
        abstract = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
        rng = np.random.default_rng(seed)

        def fill(leaf):
            if len(leaf.shape) == 4:
                fan_in = leaf.shape[0] * leaf.shape[1] * leaf.shape[2]
                return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

        return jax.tree.map(fill, abstract)

    return make
