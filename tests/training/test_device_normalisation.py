"""uint8 training batches normalised on the device train exactly like float32 batches."""

import jax
import numpy as np
import pytest

from gcc_jax.data import make_train_dataset
from gcc_jax.imagenet import normalize_crops
from gcc_jax.runtime import create_mesh, create_model
from gcc_jax.runtime import global_batch
from gcc_jax.training import create_learning_rate_fn, create_optimizer, create_train_state
from gcc_jax.training import make_loss_fn, make_train_step
from gcc_jax.training.steps import TRAIN_BATCH_KEYS
from tiny_runs import tiny_config

# 48 x 48 images in 64 x 64 crops: every crop is padded (and half of them flipped).
OPTIONS = {"height": 48, "width": 48, "num_train": 8, "num_val": 2, "num_test": 2, "max_people": 30}


def batches(loader, normalize, **kwargs):
    return list(make_train_dataset("synthetic_crowd", crop_size=64, batch_size=4, max_points=64, seed=2,
                                   synthetic=OPTIONS, loader=loader, normalize=normalize, **kwargs))


@pytest.mark.parametrize("loader", ["tf.data", "grain"])
def test_uint8_crops_normalised_on_the_device_equal_float32_crops(loader):
    for pixels, normalised in zip(batches(loader, False), batches(loader, True)):
        assert pixels["image"].dtype == np.uint8 and pixels["crop_box"].shape == (4, 4)
        np.testing.assert_array_equal(np.asarray(normalize_crops(pixels["image"], pixels["crop_box"])),
                                      normalised["image"])
        for key in normalised:
            if key != "image":
                np.testing.assert_array_equal(pixels[key], normalised[key])
    # Upscaled crops: the uint8 pixels are the resized values rounded (half a grey level at most).
    upscaled = zip(batches(loader, False, min_size_policy="upscale"), batches(loader, True, min_size_policy="upscale"))
    for pixels, normalised in upscaled:
        device = np.asarray(normalize_crops(pixels["image"], pixels["crop_box"]))
        np.testing.assert_allclose(device, normalised["image"], rtol=0, atol=0.5 / (0.224 * 255) + 1e-6)


def test_a_train_step_on_uint8_batches_equals_one_on_float32_batches():
    config = tiny_config(**{"crop_size": 64, "batch_size": 4})
    mesh = create_mesh(jax.devices()[:1])
    schedule = create_learning_rate_fn(config.optimizer, 2, 2)
    model = create_model(config)
    step = make_train_step(mesh, loss_fn=make_loss_fn(config.loss, crop_size=64), learning_rate_fn=schedule)
    results = []
    for normalize in (True, False):
        (batch, *_) = batches("grain", normalize)
        state = create_train_state(config, model, create_optimizer(config.optimizer, schedule), mesh)
        state, metrics = step(state, global_batch({k: batch[k] for k in TRAIN_BATCH_KEYS if k in batch}, mesh))
        results.append((float(metrics["loss"]), jax.tree.map(np.asarray, state.params)))
    assert results[0][0] == results[1][0]
    jax.tree.map(np.testing.assert_array_equal, results[0][1], results[1][1])
