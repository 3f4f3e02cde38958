"""Shared test configuration."""

import pathlib

import pytest

DATA_DIR = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Folder of the copied reference fixtures and tiny real files."""
    return DATA_DIR


# The longest tests (each runs several train.py, notebook or worker processes: 40-140 s on 2
# cores) start first, so that `pytest -n 2` spreads them over both workers instead of leaving
# them to run one after another at the end of the run.
_LONG_FILES = (
    "tests/training/test_multihost.py",
    "tests/training/test_graceful_stop.py",
    "tests/benchmarks/test_accelerator_check.py",
    "tests/training/test_resume.py",
    "tests/training/test_fine_tune_on_a_folder.py",
    "tests/notebooks/test_colab_notebook.py",
    "tests/training/test_data_parallel.py",
    "tests/test_without_tensorflow.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: k for k, path in enumerate(_LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(_LONG_FILES)))
