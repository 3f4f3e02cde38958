"""notebooks/colab_tpu.ipynb: a valid notebook, committed without outputs, whose code runs on CPU.

The code cells run top to bottom in a fresh Python process, in the notebook's test mode
(``GCC_JAX_NOTEBOOK_TEST=1``, documented in its Settings cell): lines that start with ``!`` or
``%`` (shell commands and IPython magics — the install and TensorBoard) are left out, so neither
a Jupyter kernel nor the network is needed; ``nbformat`` reads and validates the file. Two runs:
the synthetic fallback on one CPU device, and the data-set cells (TFDS build from a manual
directory, ``configs/sha.py:runlocal``) on the real ShanghaiTech sample of ``tests/data`` with
two simulated CPU devices, which exercises the global batch = per-device batch × devices.
"""

import json
import os
import pathlib
import subprocess
import sys

import nbformat
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "colab_tpu.ipynb"
SHA_SAMPLE = REPO / "tests" / "data" / "shanghaitech_sample"

# Runs the cells written by script_cells in one namespace, as a kernel would; each cell is
# registered with linecache so that a traceback shows the notebook line that failed.
_RUNNER = r"""
import json, linecache, sys
namespace = {"__name__": "__main__"}
for index, source in json.load(open(sys.argv[1])):
    filename = f"<notebook cell {index}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    print(f"--- cell {index}", flush=True)
    exec(compile(source, filename, "exec"), namespace)
"""


def script_cells(notebook) -> list[tuple[int, str]]:
    """The code cells as plain Python, ``(cell index, source)``.

    Lines whose first character is ``!`` or ``%`` become empty lines (line numbers stay those
    of the notebook).

    Raises:
      ValueError: a cell magic (``%%``), or a ``!`` / ``%`` line that is indented — dropping it
        could leave an empty block or skip code that the test mode should run.
    """
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        lines = []
        for number, line in enumerate(cell.source.splitlines(), 1):
            stripped = line.lstrip()
            if stripped.startswith("%%") or (stripped[:1] in ("!", "%") and stripped != line):
                raise ValueError(f"cell {index}, line {number}: {line!r} cannot be left out on its own")
            lines.append("" if stripped[:1] in ("!", "%") else line)
        cells.append((index, "\n".join(lines) + "\n"))
    return cells


def run_notebook(tmp_path, *, devices: int = 1, manual_dir=None) -> subprocess.CompletedProcess:
    """Runs the notebook's code in test mode with ``tmp_path`` as working directory."""
    cells_file = tmp_path / "cells.json"
    cells_file.write_text(json.dumps(script_cells(nbformat.read(NOTEBOOK, as_version=4))))
    env = {key: value for key, value in os.environ.items() if not key.startswith("GCC_JAX_NOTEBOOK_")}
    env.update(
        GCC_JAX_NOTEBOOK_TEST="1",
        GCC_JAX_NOTEBOOK_REPO_DIR=str(REPO),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        MPLBACKEND="Agg",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    if manual_dir is not None:
        env["GCC_JAX_NOTEBOOK_MANUAL_DIR"] = str(manual_dir)
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(cells_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"the notebook failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def check_run(workdir: pathlib.Path, *, eval_images: int) -> dict:
    """What every run of the notebook leaves in its workdir; returns the evaluation metrics."""
    config = json.loads((workdir / "config.json").read_text())
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last_step = config["num_train_steps"]
    assert [r["step"] for r in records if r["split"] == "val"] == [0, last_step]
    assert max(r["step"] for r in records if r["split"] == "train") == last_step
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    results = json.loads((workdir / "eval_test_best.json").read_text())
    assert results["split"] == "test" and results["checkpoint"] == "best"
    assert results["num_images"] == eval_images
    summary = json.loads((workdir / "predictions" / "summary.json").read_text())
    (row,) = summary["images"]
    for picture in ("density", "points"):
        with Image.open(workdir / "predictions" / f"{row['name']}_{picture}.png") as image:
            # Pictures are the image below a banner: as wide as the image, and taller.
            assert image.width == row["width"] and image.height > row["height"]
    return config


def test_notebook_is_valid_and_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"outputs committed in:\n{cell.source[:200]}"
    assert notebook.metadata["accelerator"] == "TPU"  # Colab opens it on a TPU runtime
    sources = "\n".join(cell.source for cell in code)
    assert 'REPO_URL = "' in sources and "GCC_JAX_NOTEBOOK_TEST" in sources
    script_cells(notebook)  # every magic / shell line can be left out


def test_script_cells_leaves_out_only_top_level_magic_lines():
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("!not code"),
            nbformat.v4.new_code_cell("x = 1\n!pip install foo\n%load_ext tensorboard\ny = x % 2"),
        ]
    )
    assert script_cells(notebook) == [(1, "x = 1\n\n\ny = x % 2\n")]
    for source in ("if x:\n    !pip install foo", "%%bash\necho hi"):
        notebook.cells[1].source = source
        with pytest.raises(ValueError, match="cannot be left out"):
            script_cells(notebook)


def test_synthetic_fallback_runs_on_cpu(tmp_path):
    result = run_notebook(tmp_path)
    config = check_run(tmp_path / "runs" / "synthetic", eval_images=2)
    assert config["dataset"]["name"] == "synthetic_crowd" and config["batch_size"] == 2
    assert "1 cpu device(s)" in result.stdout


def test_dataset_cells_run_on_a_shanghaitech_sample_with_two_devices(tmp_path):
    result = run_notebook(tmp_path, devices=2, manual_dir=SHA_SAMPLE)
    config = check_run(tmp_path / "runs" / "real", eval_images=1)
    assert config["dataset"]["name"] == "shanghaitech/part_a"
    assert config["batch_size"] == 2  # BATCH_PER_DEVICE 1 x 2 devices
    assert "global batch 2 = 1 per device x 2 device(s)" in result.stdout
    assert (tmp_path / "tensorflow_datasets" / "shanghaitech").is_dir()  # built from the manual directory
