"""The Grain backend of the input pipelines (see :mod:`gcc_jax.data.pipeline`): no TensorFlow.

A ``grain.MapDataset`` over the epoch's example order maps each index to its finished example
in worker threads: the shared decisions (:mod:`gcc_jax.data.examples`), then PIL decoding and
numpy pixel work (:mod:`gcc_jax.data.images`). Threads rather than processes: the expensive
parts (JPEG decoding, resizing, copying and normalising pixels) run in C without Python's
lock, and threads share one decoded-image cache (:mod:`gcc_jax.data.image_cache`), where
worker processes would each hold a copy. Batches are assembled in a background thread too.
"""

from __future__ import annotations

import os
from typing import Iterator

import grain
import numpy as np

from gcc_jax.data import image_cache
from gcc_jax.data.examples import EvalExamples, TrainExamples
from gcc_jax.data.images import crop_train_image, decode_image, eval_image

__all__ = ["eval_batches", "pad_stack", "train_batches"]


def _threads(parallelism: int | None) -> int:
    if parallelism is not None:
        return max(int(parallelism), 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _iterate(dataset: grain.MapDataset, *, batch_size: int, parallelism: int | None, prefetch: int, batch_fn=None):
    threads = _threads(parallelism)
    examples = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(threads, batch_size * max(prefetch, 1)))
    )
    batches = examples.batch(batch_size, batch_fn=batch_fn)
    if prefetch > 0:
        batches = grain.experimental.ThreadPrefetchIterDataset(batches, prefetch_buffer_size=prefetch)
    return iter(batches)


def train_batches(examples: TrainExamples, order: list[int], *, batch_size: int, parallelism: int | None,
                  prefetch: int, cache_bytes: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's training batches of one epoch (``order``: example indices in order)."""
    source = examples.source

    def load(index: int) -> dict[str, np.ndarray]:
        example = examples(index)
        if source.encoded:
            pixels = image_cache.get_or_decode(
                (source.cache_key, "pil", index),
                lambda: decode_image(example.read_image(), filename=example.filename), max_bytes=cache_bytes,
            )  # fmt: skip
        else:
            pixels = example.read_image()
        image = crop_train_image(pixels, example.crop, crop_size=examples.crop_size, normalize=examples.normalize)
        return {**example.points, "image": image}

    dataset = grain.MapDataset.source(order).map(load)
    return _iterate(dataset, batch_size=batch_size, parallelism=parallelism, prefetch=prefetch)


def pad_stack(items: list[dict]) -> dict[str, np.ndarray]:
    """Stacks examples into a batch, zero-padding every array to the largest in the batch
    (``tf.data``'s ``padded_batch``); byte strings become an object array."""
    batch = {}
    for key, first in items[0].items():
        values = [item[key] for item in items]
        if isinstance(first, bytes):
            batch[key] = np.array(values, dtype=object)
            continue
        values = [np.asarray(value) for value in values]
        shape = np.max([value.shape for value in values], axis=0) if first.ndim else ()
        stacked = np.zeros((len(values), *shape), values[0].dtype)
        for row, value in enumerate(values):
            stacked[(row, *(slice(0, n) for n in value.shape))] = value
        batch[key] = stacked
    return batch


def eval_batches(examples: EvalExamples, order: list[int], *, batch_size: int, pad_multiple: int,
                 parallelism: int | None, prefetch: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's evaluation batches (``order``: example indices in order)."""
    source = examples.source

    def load(index: int) -> dict:
        example = examples(index)
        pixels = decode_image(example.image, filename=example.filename) if source.encoded else example.image
        return {**example.entries, "image": eval_image(pixels, example.entries["image_hw"], pad_multiple=pad_multiple)}

    dataset = grain.MapDataset.source(order).map(load)
    return _iterate(dataset, batch_size=batch_size, parallelism=parallelism, prefetch=prefetch, batch_fn=pad_stack)
