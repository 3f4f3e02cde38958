"""A tiny random model directory shared by the predict tests."""

import pytest

from gcc_jax.models import VGG19Density, save_variables
from random_model import random_variables

WIDTH = 1 / 16


@pytest.fixture(scope="session")
def tiny_model():
    """``(model, variables)`` of a width-1/16 random VGG19Density: zero biases, and the last
    layer scaled so that density peaks straddle the localization thresholds."""
    model = VGG19Density(width=WIDTH)
    return model, random_variables(model, bias_scale=0.0, output_scale=0.02)


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
