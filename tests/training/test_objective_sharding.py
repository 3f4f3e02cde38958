"""Per-device loss computation (shard_map over ``data``) equals the plain objective."""

import json

import pytest

from tiny_runs import REPO, run_python


def test_sharded_objective_equals_plain_objective(tmp_path):
    out = tmp_path / "report.json"
    run_python([REPO / "tests" / "training" / "sharded_objective_worker.py", out], devices=4)
    report = json.loads(out.read_text())
    assert report["devices"] == 4
    for name in ("gl", "bl", "dm_count", "l2"):
        result = report[name]
        assert result["sharded"] == pytest.approx(result["plain"], rel=1e-5), name
        assert result["max_grad_difference"] <= 1e-5 * max(result["max_grad"], 1e-6), (name, result)
    # Each device works on its own images: the batch is never gathered for GL's image loop.
    assert report["gl_sharded_all_gathers"] == 0
