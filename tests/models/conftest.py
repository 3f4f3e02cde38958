"""Fixtures for the model tests."""

import pytest
from random_model import random_variables as _random_variables


@pytest.fixture
def random_variables():
    """``make(model, seed=0)`` → random variables for ``model`` (see tests/random_model.py)."""
    return _random_variables
