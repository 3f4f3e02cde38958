"""The benchmarks' official GL computation (PyTorch + stock geomloss) reproduces the fixtures,
so speed ratios against it compare the same computation."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("geomloss")

from benchmarks.official_gl import official_gl_value_and_grad  # noqa: E402

PARAMS = ("cost", "scale", "blur", "reach", "scaling", "tau", "p", "d_point", "d_pixel")


@pytest.mark.parametrize("index", range(7))
def test_official_computation_matches_fixture(data_dir, index):
    reference = np.load(data_dir / "gl_reference.npz")
    key = f"case{index}/"
    params = {name: reference[key + "param/" + name].item() for name in PARAMS}
    loss, grad = official_gl_value_and_grad(
        reference[key + "density"][None], [reference[key + "points"]],
        crop_size=float(reference[key + "crop_size"]), **params,
    )  # fmt: skip
    np.testing.assert_allclose(loss, reference[key + "out/total"], rtol=1e-5)
    ref_grad = reference[key + "out/grad"]
    np.testing.assert_allclose(grad[0], ref_grad, rtol=1e-4, atol=1e-5 * np.abs(ref_grad).max())
