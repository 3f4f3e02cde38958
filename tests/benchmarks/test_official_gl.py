"""The benchmarks' official GL computation (PyTorch + stock geomloss) reproduces the fixtures,
so speed ratios against it compare the same computation."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("geomloss")

from benchmarks.official_gl import official_gl_value_and_grad  # noqa: E402
from tolerances import gl_rtol  # noqa: E402

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
    # The same torch computation as the fixtures', possibly on another CPU: GL's float32 bound.
    rtol = gl_rtol(cells=reference[key + "density"].size, points=len(reference[key + "points"]),
                   blur=params["blur"], scaling=params["scaling"], p=params["p"])
    np.testing.assert_allclose(loss, reference[key + "out/total"], rtol=rtol)
    ref_grad = reference[key + "out/grad"]
    np.testing.assert_allclose(grad[0], ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())
