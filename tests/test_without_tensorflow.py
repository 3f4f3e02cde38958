"""The program runs where TensorFlow is not installed: imports, training and evaluation with
the Grain loader, and reading a TFDS data set prepared elsewhere.

Each test runs Python in a subprocess whose import system hides TensorFlow as if it were not
installed (``importlib.util.find_spec("tensorflow")`` is ``None`` and ``import tensorflow``
raises ``ModuleNotFoundError``), the way TFDS and etils probe for it.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "tests" / "data" / "shanghaitech_sample"

_HIDE_TENSORFLOW = '''
import sys


class _HideTensorFlow:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._finder, attr)


sys.meta_path[:] = [_HideTensorFlow(finder) for finder in sys.meta_path]
'''

_CHECK_NO_TENSORFLOW = '''
import sys
assert not [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")], "tensorflow was imported"
'''


@pytest.fixture(scope="module")
def no_tf_env(tmp_path_factory):
    """Environment of a subprocess without TensorFlow (a ``sitecustomize`` hides it)."""
    folder = tmp_path_factory.mktemp("no_tensorflow")
    (folder / "sitecustomize.py").write_text(_HIDE_TENSORFLOW)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_python(code: str, env: dict, *, timeout: int = 300, args=()) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args] if args else [sys.executable, "-c", code], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_the_library_and_the_configs_import_without_tensorflow(no_tf_env):
    code = textwrap.dedent('''
        import importlib.util
        try:
            import tensorflow
            raise SystemExit("tensorflow is still importable")
        except ModuleNotFoundError:
            pass
        import gcc_jax.data, gcc_jax.evaluate, gcc_jax.predict, gcc_jax.training
        from gcc_jax.runtime import load_config_module
        for name in ("default", "synthetic", "sha", "shb", "qnrf", "nwpu", "jhu"):
            load_config_module(f"configs/{name}.py").get_config()
        from gcc_jax.data import make_train_dataset
        try:
            make_train_dataset("synthetic_crowd", crop_size=32, batch_size=2, max_points=8, seed=0, loader="tf.data")
            raise SystemExit("the tf.data loader ran without TensorFlow")
        except ModuleNotFoundError as error:
            assert "loader='grain'" in str(error), error
    ''') + _CHECK_NO_TENSORFLOW  # fmt: skip
    run_python(code, no_tf_env)


def test_train_and_evaluate_with_grain_without_tensorflow(no_tf_env, tmp_path):
    workdir = tmp_path / "run"
    run_python("", no_tf_env, args=["train.py", "--config", "configs/synthetic.py:runlocal",
                                    "--config.dataset.loader=grain", "--config.progress_bar=false",
                                    "--workdir", str(workdir)])  # fmt: skip
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    assert [p.name for p in (workdir / "best").iterdir()] == ["4"]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(0, "val"), (2, "train"), (4, "train"), (4, "val")]
    assert json.loads((workdir / "config.json").read_text())["dataset"]["loader"] == "grain"
    result = run_python("", no_tf_env, args=["-m", "gcc_jax.evaluate", "--workdir", str(workdir), "--split", "val"])
    assert "mae" in result.stdout


def test_a_prepared_tfds_data_set_is_read_without_tensorflow(no_tf_env, tmp_path):
    from gcc_jax.data import build_dataset  # preparing it needs TensorFlow (here, not in the subprocess)

    build_dataset("shanghaitech/part_a", manual_dir=SAMPLE_DIR, data_dir=tmp_path)
    code = textwrap.dedent(f'''
        from gcc_jax.data import make_eval_dataset, make_train_dataset
        (batch,) = list(make_train_dataset("shanghaitech/part_a", crop_size=256, batch_size=2, max_points=1024,
                                           seed=0, data_dir={str(tmp_path)!r}, loader="grain"))
        assert batch["image"].shape == (2, 256, 256, 3) and batch["num_points"].min() > 0
        batches = list(make_eval_dataset("shanghaitech/part_a", split="test", data_dir={str(tmp_path)!r},
                                         loader="grain"))
        assert [b["image"].shape for b in batches] == [(1, 432, 640, 3)] and batches[0]["count"][0] == 297
    ''') + _CHECK_NO_TENSORFLOW  # fmt: skip
    run_python(code, no_tf_env)


REQUIREMENTS = ROOT / "requirements-without-tensorflow.txt"


def test_the_requirements_without_tensorflow_are_pyproject_s_less_tensorflow():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(d for d in declared if not d.startswith("tensorflow-cpu"))


# A fresh virtual environment filled from PyPI (or pip's cache): jax, flax, orbax, grain, TFDS,
# scipy, matplotlib...: 312 s here (2 shared cores at load ~10, pip cache warm); hence slow. By hand:
#   pytest -m slow tests/test_without_tensorflow.py -k fresh
@pytest.mark.slow
def test_a_fresh_environment_installs_with_one_command_and_trains_with_grain(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    command = f"{python} -m pip install -q -r {REQUIREMENTS} && {python} -m pip install -q --no-deps -e {ROOT}"
    install = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-4000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(JAX_PLATFORMS="cpu")
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util; print(importlib.util.find_spec('tensorflow'))"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "None"  # a machine without TensorFlow indeed
    flags = [
        "--config=configs/synthetic.py:runlocal", "--config.dataset.loader=grain", "--config.num_train_steps=2",
        "--config.dataset.synthetic.height=64", "--config.dataset.synthetic.width=64", "--config.crop_size=64",
        "--config.dataset.synthetic.num_train=4", "--config.dataset.synthetic.num_val=2", "--config.batch_size=2",
        "--config.eval_batch_size=2", "--config.progress_bar=False",
    ]  # fmt: skip
    train = subprocess.run(
        [str(python), "train.py", f"--workdir={tmp_path / 'run'}", *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-4000:]
    assert "best val mae" in train.stdout and (tmp_path / "run" / "checkpoints" / "2").is_dir()
