"""Example sources: split slicing of prepared TFDS data sets."""

import pytest

from gcc_jax.data.sources import open_source


def _filenames(source):
    return [source.read(i)["filename"] for i in range(len(source))]


def test_absolute_slices_past_the_end_take_what_there_is(sha_sample_data_dir):
    # The sample's part A holds 2 training and 1 test image; TFDS itself rejects "train[:8]".
    whole = open_source("shanghaitech/part_a", split="train", data_dir=sha_sample_data_dir)
    assert len(whole) == 2
    first_eight = open_source("shanghaitech/part_a", split="train[:8]", data_dir=sha_sample_data_dir)
    assert _filenames(first_eight) == _filenames(whole)
    last = open_source("shanghaitech/part_a", split="train[-1:]", data_dir=sha_sample_data_dir)
    assert _filenames(last) == _filenames(whole)[-1:]
    mixed = open_source("shanghaitech/part_a", split="train[:1]+test[:5]", data_dir=sha_sample_data_dir)
    test = open_source("shanghaitech/part_a", split="test", data_dir=sha_sample_data_dir)
    assert _filenames(mixed) == _filenames(whole)[:1] + _filenames(test)


def test_a_slice_that_selects_nothing_is_an_error(sha_sample_data_dir):
    with pytest.raises(ValueError, match=r"'train\[5:\]'.*selects no examples.*has 2"):
        open_source("shanghaitech/part_a", split="train[5:]", data_dir=sha_sample_data_dir)
