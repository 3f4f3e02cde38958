"""Tiny training configs and a subprocess runner for the training tests."""

import os
import pathlib
import subprocess
import sys

import pytest

from gcc_jax.training import load_config_module

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(**overrides):
    """``configs/synthetic.py:runlocal`` made smaller still: 64 × 64 images (crop = image, so
    steps differ only by flips), width 1/16, 4 training and 2 validation images, no progress
    bar. ``overrides`` maps dotted field names to values."""
    config = load_config_module(REPO / "configs" / "synthetic.py").get_config("runlocal")
    config.dataset.synthetic.update(height=64, width=64, num_train=4, num_val=2, max_people=30)
    config.dataset.max_points = 32
    config.update_from_flattened_dict(
        {
            "crop_size": 64,
            "batch_size": 4,
            "eval_batch_size": 2,
            "num_pictures": 1,
            "progress_bar": False,
            "log_every_steps": 1,
            **overrides,
        }
    )
    return config


@pytest.fixture
def make_tiny_config():
    return tiny_config


def run_python(args, *, devices=1, timeout=600, check=True, **popen):
    """Runs ``python args...`` in the repository root with ``devices`` fake CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **popen
    )
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result
