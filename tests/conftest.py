"""Shared test configuration."""

import pathlib

import pytest

DATA_DIR = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Folder of the copied reference fixtures and tiny real files."""
    return DATA_DIR
