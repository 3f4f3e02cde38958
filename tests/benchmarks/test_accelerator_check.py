"""The accelerator check runs end to end on a CPU with tiny settings (``--quick``), without
TensorFlow, and writes its JSON and Markdown report."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_quick_accelerator_check_on_cpu_without_tensorflow(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def __init__(self, finder): self._finder = finder\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow' or name.startswith('tensorflow.'): return None\n"
        "        return self._finder.find_spec(name, path, target)\n"
        "    def __getattr__(self, attr): return getattr(self._finder, attr)\n"
        "sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(hide), str(ROOT)]))
    out = tmp_path / "check"
    result = subprocess.run([sys.executable, "benchmarks/accelerator_check.py", "--out", str(out), "--quick",
                             "--budget_s", "400"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "accelerator_check.json").read_text())
    parts = report["parts"]
    assert list(parts) == ["environment", "matmul_peak", "losses", "train_step", "torch_step", "end_to_end"]
    failed = {name: part for name, part in parts.items() if "error" in part or "failed" in part}
    assert not failed, failed
    assert parts["environment"]["platform"] == "cpu" and parts["environment"]["versions"]["tensorflow"] is None
    assert parts["matmul_peak"]["float32_tflops"] > 0
    rows = [row for row in parts["losses"]["rows"] if "skipped" not in row]
    assert {row["loss"] for row in rows} == {"gl", "bl", "dm_count", "l2"}
    for row in rows:
        if "rel_diff_loss" in row:  # torch (and geomloss for GL) installed: the same computation
            assert row["rel_diff_loss"] < 1e-3, row
    assert parts["train_step"]["float32"]["images_per_s"] > 0 and 0 < parts["train_step"]["float32"]["loss_share"]
    assert parts["end_to_end"]["images_per_s"] > 0 and parts["end_to_end"]["fraction_of_step_only"] > 0
    markdown = (out / "accelerator_check.md").read_text()
    assert "End to end" in markdown and "| gcc_jax float32 |" in markdown
