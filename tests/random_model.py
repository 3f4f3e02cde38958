"""Random VGG19Density variables for tests, without running ``model.init``.

Compiling ``model.init`` costs seconds on a shared CPU (one threefry kernel per parameter
shape); numpy fills the abstract tree at once.
"""

import jax
import numpy as np


def random_variables(model, *, seed=0, bias_scale=0.1, output_scale=1.0):
    """Variables for ``model``: He-normal (fan-in) kernels so activations stay O(1) through the
    19 layers; biases N(0, ``bias_scale``²) (all zero, and drawing nothing, when 0); the last
    layer's kernel times ``output_scale`` (small values put density peaks near the usual
    localization thresholds)."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if len(leaf.shape) == 1:
            if bias_scale == 0:
                return np.zeros(leaf.shape, np.float32)
            return (bias_scale * rng.standard_normal(leaf.shape)).astype(np.float32)
        kernel = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
        if jax.tree_util.keystr(path).endswith("['conv3']['kernel']"):
            kernel = kernel * output_scale
        return kernel.astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract)
