"""Data parallelism: 8 devices give the same losses and parameters as 1 on the same batches."""

import json

import numpy as np

from tiny_runs import REPO, run_python


def test_eight_devices_equal_one_device(tmp_path):
    out = tmp_path / "result.json"
    run_python([REPO / "tests" / "training" / "data_parallel_worker.py", out], devices=8)
    result = json.loads(out.read_text())
    # The 8-device run really is data parallel: parameters on all 8, one image per device.
    assert result["param_devices"] == 8
    assert result["image_shards"] == [[1, 64, 64, 3]] * 8
    np.testing.assert_allclose(result["losses_eight"], result["losses_one"], rtol=1e-5)
    assert result["max_param_difference"] <= 1e-5 * max(result["max_param"], 1.0), result
