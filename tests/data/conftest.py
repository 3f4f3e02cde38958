"""Fixtures of the data set tests (raw-file writers live in raw_layouts.py)."""

from __future__ import annotations

import logging
import shutil

import pytest
from raw_layouts import SAMPLE_DIR

from gcc_jax.data import LOADERS


@pytest.fixture()
def sample_copy(tmp_path):
    """A writable copy of the real ShanghaiTech sample files."""
    target = tmp_path / "raw_sample"
    shutil.copytree(SAMPLE_DIR, target)
    return target


@pytest.fixture(scope="session")
def sha_sample_data_dir(tmp_path_factory):
    """The real ShanghaiTech sample, both parts, prepared once for the pipeline tests."""
    from gcc_jax.data import build_dataset

    data_dir = tmp_path_factory.mktemp("tfds")
    for name in ("shanghaitech/part_a", "shanghaitech/part_b"):
        build_dataset(name, manual_dir=SAMPLE_DIR, data_dir=data_dir)
    return data_dir


@pytest.fixture(params=LOADERS)
def loader(request):
    """Each input backend in turn."""
    return request.param


@pytest.fixture()
def warnings_log(caplog):
    """Captures the gcc_jax.data warnings."""
    caplog.set_level(logging.WARNING, logger="gcc_jax.data")
    return caplog
