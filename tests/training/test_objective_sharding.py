"""Per-device loss computation (shard_map over ``data``) equals the plain objective."""

import json

import pytest

from tiny_runs import REPO, run_python
from tolerances import bl_rtol, dm_rtol, gl_rtol, sum_rtol


def test_sharded_objective_equals_plain_objective(tmp_path):
    out = tmp_path / "report.json"
    run_python([REPO / "tests" / "training" / "sharded_objective_worker.py", out], devices=4)
    report = json.loads(out.read_text())
    assert report["devices"] == 4
    # Per device or all at once, each image's loss is the same computation in another program
    # (8 × 8 cells, 24 point slots): its round-off bound (tests/tolerances.py), and the batch
    # reduction's sum over 8 images on top; gradients one more pass.
    rtols = {"gl": gl_rtol(cells=64, points=24), "bl": bl_rtol(heads=24, cells=64),
             "dm_count": dm_rtol(cells=64, heads=24), "l2": bl_rtol(heads=24, cells=64)}
    for name, rtol in rtols.items():
        result = report[name]
        rtol += sum_rtol(8)
        assert result["sharded"] == pytest.approx(result["plain"], rel=rtol, abs=rtol * 30), name  # 30: parts (heads + mass)
        assert result["max_grad_difference"] <= 2 * rtol * result["max_grad"], (name, result)
    # Each device works on its own images: the batch is never gathered for GL's image loop.
    assert report["gl_sharded_all_gathers"] == 0
