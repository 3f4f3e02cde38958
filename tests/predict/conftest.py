"""A tiny random model directory shared by the predict tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcc_jax.models import VGG19Density, save_variables

WIDTH = 1 / 16


def random_variables(model, *, output_scale=0.02, seed=0):
    """He-normal weights drawn in numpy, zero biases (compiling ``model.init`` costs more than
    these tests); the last layer is scaled so that density peaks straddle the usual thresholds."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    rng = np.random.default_rng(seed)

    def draw(path, spec):
        if len(spec.shape) == 1:
            return np.zeros(spec.shape, np.float32)
        weights = rng.standard_normal(spec.shape) * np.sqrt(2.0 / np.prod(spec.shape[:-1]))
        last = jax.tree_util.keystr(path).endswith("['conv3']['kernel']")
        return (weights * (output_scale if last else 1.0)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="session")
def tiny_model():
    """``(model, variables)`` of a width-1/16 random VGG19Density."""
    model = VGG19Density(width=WIDTH)
    return model, random_variables(model)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_model):
    """A model directory (as ``convert_weights`` writes) holding the tiny random model."""
    path = tmp_path_factory.mktemp("predict") / "model"
    save_variables(path, tiny_model[1], {"width": WIDTH})
    return path


@pytest.fixture(scope="session")
def sample_images(data_dir):
    """Real ShanghaiTech images: two of 640 px width (heights 427 and 480: one bucket of 128)
    and a larger greyscale one (1024 x 746)."""
    root = data_dir / "shanghaitech_sample" / "part_A"
    return {
        "a": root / "test_data" / "images" / "IMG_3.jpg",
        "b": root / "test_data" / "images" / "000.png",
        "grey": root / "train_data" / "images" / "IMG_4.jpg",
    }
