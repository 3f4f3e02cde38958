"""The pixel work of the two backends: gcc_jax.data.images (numpy / PIL, Grain) against
gcc_jax.data.ops (TensorFlow, tf.data) and hand computations."""

import numpy as np
import pytest
import tensorflow as tf
from raw_layouts import SAMPLE_DIR

from gcc_jax.data import images, ops
from gcc_jax.data._grain import pad_stack
from gcc_jax.data.plan import TrainCrop
from gcc_jax.imagenet import normalize_images
from tolerances import bilinear_atol, normalised_atol

# The numpy resize rounds TensorFlow's float32 operations in TensorFlow's order, so the two
# agree to the bit on every x86 CPU; the bounds admit a TensorFlow build that contracts them
# into FMAs (tests/tolerances.py), which moves sample positions by round-off of the input's side.


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)


def test_resize_matches_hand_computation():
    # Two pixels 0 and 100 to four: half-pixel centres sample at -0.25, 0.25, 0.75, 1.25
    # (clamped at the borders).
    image = np.array([[[0] * 3, [100] * 3]], np.uint8)
    np.testing.assert_allclose(images.resize_bilinear(image, 1, 4)[0, :, 0], [0, 25, 75, 100])


@pytest.mark.parametrize("size, new_size", [((37, 53), (80, 121)), ((80, 121), (37, 53)), ((64, 64), (64, 100)),
                                            ((1, 5), (3, 2))])
def test_resize_is_tensorflows_bilinear_and_windows_are_slices(size, new_size):
    image = random_image(*size)
    ours = images.resize_bilinear(image, *new_size)
    theirs = ops.resize_image(image, *new_size).numpy()
    assert ours.dtype == np.float32 and ours.shape == (*new_size, 3)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=bilinear_atol(size))
    rows, cols = (new_size[0] // 3, new_size[0]), (1, new_size[1] // 2 + 1)
    window = images.resize_bilinear(image, *new_size, rows=rows, cols=cols)
    np.testing.assert_array_equal(window, ours[rows[0] : rows[1], cols[0] : cols[1]])


def test_jpeg_and_png_decode_the_same_in_both_backends():
    files = sorted(SAMPLE_DIR.glob("part_*/*/images/*.jpg")) + sorted(SAMPLE_DIR.glob("part_*/*/images/*.png"))
    assert len(files) == 6
    for path in files:
        data = path.read_bytes()
        pixels = images.decode_image(data, filename=path.name)
        assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
        assert images.encoded_image_size(data) == pixels.shape[:2]
        np.testing.assert_array_equal(pixels, ops.decode_image(data).numpy(), err_msg=path.name)


def test_undecodable_images_name_the_file():
    data = (SAMPLE_DIR / "part_B/train_data/images/IMG_3.jpg").read_bytes()
    with pytest.raises(ValueError, match="cannot decode image IMG_9.jpg"):
        images.decode_image(data[:2000], filename="IMG_9.jpg")
    with pytest.raises(ValueError, match="IMG_9.jpg"):
        images.encoded_image_size(b"not an image", filename="IMG_9.jpg")


def test_normalisation_is_the_imagenet_formula():
    image = random_image(7, 9)
    np.testing.assert_array_equal(images.normalize_rows(image), normalize_images(image))
    np.testing.assert_array_equal(ops.normalize_image(image).numpy(), normalize_images(image))


@pytest.mark.parametrize(
    "crop",
    [
        TrainCrop((50, 60), (50, 60), 1.0, 1.0, (50, 60), 1.0, 10, 20, False),  # plain window
        TrainCrop((50, 60), (50, 60), 1.0, 1.0, (50, 60), 1.0, 40, 45, True),  # past the edges, flipped
        TrainCrop((20, 30), (20, 30), 1.0, 1.0, (32, 48), 1.6, 0, 7, True),  # upscaled
        TrainCrop((50, 60), (100, 120), 2.0, 2.0, (100, 120), 1.0, 30, 60, False),  # resize rule
        TrainCrop((50, 60), (25, 30), 0.5, 0.5, (32, 38), 1.28, 0, 3, False),  # rule, then upscale
    ],
)
def test_training_crops_agree(crop):
    image = random_image(*crop.image_hw, seed=1)
    ours = images.crop_train_image(image, crop, crop_size=32)
    needs_resize = crop.resized_hw != crop.image_hw or crop.upscaled_hw != crop.resized_hw
    theirs = ops.crop_train_image(
        image, needs_resize=needs_resize, resized_hw=crop.resized_hw, upscaled_hw=crop.upscaled_hw,
        corner=(crop.top, crop.left), flip=crop.flip, crop_size=32,
    ).numpy()  # fmt: skip
    assert ours.shape == theirs.shape == (32, 32, 3)
    resized_inputs = [crop.image_hw] if crop.resized_hw != crop.image_hw else []
    resized_inputs += [crop.resized_hw] if crop.upscaled_hw != crop.resized_hw else []
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=normalised_atol(bilinear_atol(*resized_inputs)))
    valid_h, valid_w = crop.valid_hw(32)
    unflipped = ours[:, ::-1] if crop.flip else ours
    assert not unflipped[valid_h:].any() and not unflipped[:, valid_w:].any()
    if not needs_resize:
        window = image[crop.top : crop.top + valid_h, crop.left : crop.left + valid_w]
        np.testing.assert_array_equal(unflipped[:valid_h, :valid_w], normalize_images(window))


def test_evaluation_images_agree_and_are_padded_with_zeros():
    image = random_image(37, 50)
    for size in ((37, 50), (60, 81)):
        ours = images.eval_image(image, size, pad_multiple=16)
        theirs = ops.eval_image(image, size, pad_multiple=16).numpy()
        assert ours.shape == theirs.shape == (-(-size[0] // 16) * 16, -(-size[1] // 16) * 16, 3)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=normalised_atol(bilinear_atol(image.shape[:2])))
        assert not ours[size[0] :].any() and not ours[:, size[1] :].any()


def test_pad_stack_pads_like_padded_batch():
    items = [{"points": np.ones([2, 2], np.float32), "name": b"a", "n": np.int32(2)},
             {"points": np.ones([3, 2], np.float32), "name": b"bb", "n": np.int32(3)}]
    batch = pad_stack(items)
    expected = tf.data.Dataset.from_generator(
        lambda: iter(items), output_signature={"points": tf.TensorSpec([None, 2], tf.float32),
                                               "name": tf.TensorSpec([], tf.string), "n": tf.TensorSpec([], tf.int32)},
    ).padded_batch(2).get_single_element()  # fmt: skip
    for key in items[0]:
        np.testing.assert_array_equal(batch[key], expected[key].numpy(), err_msg=key)
        assert batch[key].dtype == expected[key].numpy().dtype
