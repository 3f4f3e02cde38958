"""ImageNet input normalisation shared by the models (which expect it) and the data pipelines
(which apply it).

torchvision's VGG19 weights, and therefore every GL / BL / DM-Count model, were trained on
RGB images scaled to ``[0, 1]`` and then normalised per channel with the ImageNet mean and
standard deviation below.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "denormalize_images", "normalize_crops", "normalize_images"]

# Per-channel RGB statistics on the [0, 1] scale (torchvision.transforms.Normalize values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images):
    """Maps uint8 RGB images to the normalised float32 input of the models.

    ``out = (images / 255 − mean) / std`` per channel.

    Args:
      images: ``[..., H, W, 3]`` RGB values in ``[0, 255]`` (uint8 or float), as a numpy or
        JAX array, or a ``tf.Tensor`` (works inside ``tf.data``).

    Returns:
      ``[..., H, W, 3]`` float32 array of the same kind as the input.

    Raises:
      ValueError: if the last axis is not 3 (RGB).
    """
    if images.shape[-1] != 3:
        raise ValueError(f"images must be RGB with a last axis of 3, got shape {tuple(images.shape)}")
    mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(IMAGENET_STD, np.float32) * 255.0)
    if type(images).__module__.startswith("tensorflow"):  # eager and graph (tf.data) tensors
        import tensorflow as tf

        return (tf.cast(images, tf.float32) - mean) * inv_std
    if isinstance(images, np.ndarray):
        return ((images.astype(np.float32) - mean) * inv_std).astype(np.float32)
    import jax.numpy as jnp

    return (jnp.asarray(images, jnp.float32) - mean) * inv_std


def denormalize_images(images) -> np.ndarray:
    """Inverse of :func:`normalize_images`: normalised ``[..., H, W, 3]`` → uint8 RGB (numpy)."""
    images = np.asarray(images, np.float32)
    rgb = images * (np.asarray(IMAGENET_STD, np.float32) * 255.0) + np.asarray(IMAGENET_MEAN, np.float32) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def normalize_crops(images, crop_box):
    """Normalises uint8 training crops on the device, with 0 outside their image pixels.

    The device half of ``make_train_dataset(normalize=False)``: equals the float32 batch the
    pipeline gives with ``normalize=True`` (padding = 0 = the ImageNet mean colour).

    Args:
      images: uint8 ``[B, c, c, 3]`` RGB crops (a JAX or numpy array).
      crop_box: int32 ``[B, 4]`` ``(top, left, bottom, right)`` of each crop's image pixels
        (bottom / right exclusive).

    Returns:
      float32 ``[B, c, c, 3]`` JAX array.
    """
    import jax.numpy as jnp

    images = normalize_images(jnp.asarray(images))
    box = jnp.asarray(crop_box)
    rows = jnp.arange(images.shape[1])[None, :, None]
    cols = jnp.arange(images.shape[2])[None, None, :]
    inside = (
        (rows >= box[:, 0, None, None]) & (rows < box[:, 2, None, None])
        & (cols >= box[:, 1, None, None]) & (cols < box[:, 3, None, None])
    )  # fmt: skip
    return jnp.where(inside[..., None], images, 0.0)
