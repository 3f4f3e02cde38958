"""Tiny training configs shared by the training tests and their subprocess workers."""

import os
import pathlib
import subprocess
import sys

from gcc_jax.runtime import load_config_module, resolve_recipe

REPO = pathlib.Path(__file__).resolve().parents[1]
SYNTHETIC_CONFIG = REPO / "configs" / "synthetic.py"

# On top of configs/synthetic.py:runlocal: 64 × 64 images (crop = image, so steps differ only
# by flips), width 1/16, 4 training and 2 validation images, no progress bar, every step logged.
TINY = {
    "dataset.synthetic.height": 64,
    "dataset.synthetic.width": 64,
    "dataset.synthetic.num_train": 4,
    "dataset.synthetic.num_val": 2,
    "dataset.synthetic.max_people": 30,
    "dataset.max_points": 32,
    "crop_size": 64,
    "batch_size": 4,
    "eval_batch_size": 2,
    "num_pictures": 1,
    "progress_bar": False,
    "log_every_steps": 1,
}


def tiny_config(**overrides):
    """The tiny config, its loss's training recipe resolved; ``overrides`` maps dotted field
    names to values (applied first, as on the command line)."""
    config = load_config_module(SYNTHETIC_CONFIG).get_config("runlocal")
    config.update_from_flattened_dict({**TINY, **overrides})
    return resolve_recipe(config)


def tiny_flags(**overrides):
    """``train.py`` arguments for the same tiny config."""
    return [f"--config={SYNTHETIC_CONFIG}:runlocal"] + [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]


def subprocess_env(devices: int = 1, compilation_cache: str | os.PathLike | None = None) -> dict:
    """Environment of a worker process with ``devices`` fake CPU devices.

    ``compilation_cache``: a folder for JAX's persistent compilation cache, so that a later
    worker running the same programs (a resumed run) skips their compilation.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    if compilation_cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def run_python(args, *, devices: int = 1, timeout: float = 600):
    """Runs ``python args...`` in the repository root; fails with its output if it fails.

    The workers import this module, so ``tests/`` goes on their ``PYTHONPATH``.
    """
    env = subprocess_env(devices)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"python {' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result
