"""PyTorch → Flax weight import: equivalence with a plain torch.nn network, and clear errors."""

import sys

import numpy as np
import pytest

from gcc_jax.models import VGG19Density, load_torch_state_dict, param_count, params_from_torch, torch_head_layout
from tolerances import EPS32, vgg_rtol

NARROW = 1 / 16
VARIANTS = {  # name → (upsample, output)
    "gl": ("nearest", "abs"),
    "bl": ("bilinear", "abs"),
    "relu": ("bilinear", "relu"),
}


def _relative_error(flax_out, torch_out):
    """The largest difference relative to the largest output: what tolerances.vgg_rtol bounds."""
    return float(np.max(np.abs(np.asarray(flax_out) - torch_out)) / np.max(np.abs(torch_out)))


def _torch_and_images(torch, width, upsample, output, *, density_layer=False, size=(64, 80), seed=0):
    from torch_vgg_reference import TorchVGGDensity, randomize_

    net = randomize_(TorchVGGDensity(width, upsample, output, density_layer=density_layer).eval(), seed)
    images = np.random.default_rng(seed).standard_normal((2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    return net, images, expected


def _save(torch, obj, path):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    "layout, variant",
    [("pth", "gl"), ("pth", "bl"), ("pth", "relu"), ("tar", "gl"), ("tar", "relu"), ("dataparallel", "bl")],
)
def test_reg_layer_checkpoints_match_torch(tmp_path, layout, variant):
    torch = pytest.importorskip("torch")
    upsample, output = VARIANTS[variant]
    net, images, expected = _torch_and_images(torch, NARROW, upsample, output)
    state = net.state_dict()
    if layout == "pth":
        path = _save(torch, state, tmp_path / "best_val.pth")
    elif layout == "tar":
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-5)
        path = _save(torch, {"epoch": 3, "optimizer_state_dict": optimizer.state_dict(), "model_state_dict": state}, tmp_path / "3_ckpt.tar")
    else:
        path = _save(torch, {f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")

    variables = params_from_torch(path)
    out = VGG19Density(width=NARROW, upsample=upsample, output=output).apply(variables, images)
    assert out.shape == expected.shape
    assert _relative_error(out, expected) < vgg_rtol(NARROW)


def test_dm_count_density_layer_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    net, images, expected = _torch_and_images(torch, NARROW, "bilinear", "relu", density_layer=True)
    path = _save(torch, net.state_dict(), tmp_path / "model_qnrf.pth")
    assert torch_head_layout(load_torch_state_dict(path)) == "density_layer"
    out = VGG19Density(width=NARROW, upsample="bilinear", output="relu").apply(params_from_torch(path), images)
    assert _relative_error(out, expected) < vgg_rtol(NARROW)


@pytest.mark.parametrize("variant", ["gl", "bl"])
def test_torchvision_features_with_new_head_match_torch(tmp_path, variant):
    torch = pytest.importorskip("torch")
    from torch_vgg_reference import torchvision_state_dict

    upsample, output = VARIANTS[variant]
    net, images, _ = _torch_and_images(torch, NARROW, upsample, output)
    path = _save(torch, torchvision_state_dict(net), tmp_path / "vgg19-dcbb9e9d.pth")
    assert torch_head_layout(load_torch_state_dict(path)) is None

    variables = params_from_torch(path, head="init", rng=3)
    # Give the torch network the freshly initialised Flax head, then the two must agree.
    head = variables["params"]["head"]
    with torch.no_grad():
        for index, name in zip((0, 2, 4), ("conv1", "conv2", "conv3")):
            net.reg_layer[index].weight.copy_(torch.from_numpy(np.asarray(head[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
            net.reg_layer[index].bias.copy_(torch.from_numpy(np.array(head[name]["bias"])))
        expected = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    out = VGG19Density(width=NARROW, upsample=upsample, output=output).apply(variables, images)
    assert _relative_error(out, expected) < vgg_rtol(NARROW)


def test_head_init_follows_the_references_and_rng(tmp_path):
    torch = pytest.importorskip("torch")
    from torch_vgg_reference import TorchVGGDensity, torchvision_state_dict

    state = torchvision_state_dict(TorchVGGDensity(width=0.25))
    a = params_from_torch(state, head="init", rng=0)["params"]["head"]
    b = params_from_torch(state, head="init", rng=1)["params"]["head"]
    kernel = np.asarray(a["conv1"]["kernel"])  # 3·3·128·64 entries
    assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
    assert all(np.all(np.asarray(a[name]["bias"]) == 0) for name in a)
    assert not np.allclose(kernel, np.asarray(b["conv1"]["kernel"]))


def test_bilinear_upsampling_matches_torch_align_corners():
    torch = pytest.importorskip("torch")
    from gcc_jax.models._vgg import _upsample_bilinear_x2

    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (1, 5), (2, 3), (7, 4), (32, 32)]:
        x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        want = torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=2, mode="bilinear", align_corners=True
        ).permute(0, 2, 3, 1).numpy()
        # Two-point interpolation per axis with float32 weights: a few roundings of |x| ≤ 4.
        np.testing.assert_allclose(np.asarray(_upsample_bilinear_x2(x)), want, rtol=8 * EPS32, atol=8 * EPS32 * np.abs(x).max())


def test_param_count_equals_torch():
    torch = pytest.importorskip("torch")
    import jax

    from torch_vgg_reference import TorchVGGDensity

    for density_layer in (False, True):
        net = TorchVGGDensity(width=1.0, density_layer=density_layer)
        want = sum(p.numel() for p in net.parameters())
        model = VGG19Density()
        abstract = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
        assert param_count(abstract) == want


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gl", "relu"])
def test_full_width_checkpoint_matches_torch(tmp_path, variant):
    torch = pytest.importorskip("torch")
    upsample, output = VARIANTS[variant]
    net, images, expected = _torch_and_images(torch, 1.0, upsample, output, size=(96, 128))
    path = _save(torch, net.state_dict(), tmp_path / "full.pth")
    out = VGG19Density(upsample=upsample, output=output).apply(params_from_torch(path, width=1.0), images)
    assert _relative_error(out, expected) < vgg_rtol(1.0)


# ---- numpy state dicts: the mapping itself, no torch needed ----


def _numpy_state(width=NARROW, density_layer=False, seed=0):
    """A random state dict with the references' key names and OIHW shapes (written from the
    VGG19 "E" table, independently of gcc_jax's layer plan)."""
    rng = np.random.default_rng(seed)
    state, cin, index = {}, 3, 0
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]:
        if v == "M":
            index += 1
            continue
        c = int(v * width)
        state[f"features.{index}.weight"] = rng.standard_normal((c, cin, 3, 3)).astype(np.float32)
        state[f"features.{index}.bias"] = rng.standard_normal(c).astype(np.float32)
        cin, index = c, index + 2
    c1, c2 = int(256 * width), int(128 * width)
    last = "density_layer.0" if density_layer else "reg_layer.4"
    for prefix, shape in (("reg_layer.0", (c1, cin, 3, 3)), ("reg_layer.2", (c2, c1, 3, 3)), (last, (1, c2, 1, 1))):
        state[f"{prefix}.weight"] = rng.standard_normal(shape).astype(np.float32)
        state[f"{prefix}.bias"] = rng.standard_normal(shape[0]).astype(np.float32)
    return state


@pytest.mark.parametrize("density_layer", [False, True])
def test_numpy_state_dict_maps_oihw_to_hwio(density_layer):
    state = _numpy_state(density_layer=density_layer)
    params = params_from_torch(state)["params"]
    np.testing.assert_array_equal(params["features"]["conv1_1"]["kernel"], state["features.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["features"]["conv3_4"]["kernel"], state["features.16.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["features"]["conv5_4"]["bias"], state["features.34.bias"])
    np.testing.assert_array_equal(params["head"]["conv2"]["kernel"], state["reg_layer.2.weight"].transpose(2, 3, 1, 0))
    last = "density_layer.0" if density_layer else "reg_layer.4"
    np.testing.assert_array_equal(params["head"]["conv3"]["kernel"][0, 0, :, 0], state[f"{last}.weight"][0, :, 0, 0])
    assert param_count(params) == sum(v.size for v in state.values())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("features.10.weight"), "missing key 'features.10.weight'"),
        (lambda s: s.pop("reg_layer.2.bias"), "missing key 'reg_layer.2.bias'"),
        (lambda s: s.__setitem__("features.5.weight", np.zeros((8, 8, 3, 3), np.float32)), "'features.5.weight' has shape (8, 8, 3, 3), expected (8, 4, 3, 3)"),
        (lambda s: s.__setitem__("features.3.running_mean", np.zeros(4, np.float32)), "unexpected key 'features.3.running_mean'"),
        (lambda s: s.__setitem__("density_layer.0.weight", np.zeros((1, 8, 1, 1), np.float32)), "both 'reg_layer.4.*'"),
        (lambda s: s.__setitem__("features.0.weight", np.zeros((4, 1, 3, 3), np.float32)), "'features.0.weight' has shape (4, 1, 3, 3), expected (4, 3, 3, 3)"),
        (lambda s: s.__setitem__("features.0.weight", np.zeros((4, 3, 3), np.float32)), "'features.0.weight' has shape (4, 3, 3), expected"),
        (lambda s: s.pop("features.0.weight"), "missing key 'features.0.weight'"),
        (lambda s: s.__setitem__("features.2.bias", np.zeros(4, np.int64)), "'features.2.bias' holds a int64"),
    ],
)
def test_wrong_state_dict_names_first_offending_key(edit, message):
    state = _numpy_state()
    edit(state)
    with pytest.raises(ValueError) as err:
        params_from_torch(state)
    assert message in str(err.value)


def test_features_only_needs_head_init():
    state = {k: v for k, v in _numpy_state().items() if k.startswith("features.")}
    with pytest.raises(ValueError, match=r"missing key 'reg_layer.0.weight'.*pass head='init'"):
        params_from_torch(state)
    assert set(params_from_torch(state, head="init")["params"]["head"]) == {"conv1", "conv2", "conv3"}


def test_width_argument_must_match_file():
    with pytest.raises(ValueError, match="does not match the file"):
        params_from_torch(_numpy_state(), width=1.0)
    params_from_torch(_numpy_state(), width=NARROW)


def test_bad_head_argument():
    with pytest.raises(ValueError, match="head must be 'keep' or 'init'"):
        params_from_torch(_numpy_state(), head="new")


@pytest.mark.parametrize("content", [b"not a checkpoint at all\n", b""])
def test_not_a_checkpoint_file(tmp_path, content):
    pytest.importorskip("torch")
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"weights\.pth: not a PyTorch checkpoint that loads safely"):
        params_from_torch(path)


def test_checkpoint_with_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "evil.pth"
    # An arbitrary pickled object: weights_only=True must refuse to build it.
    torch.save({"model_state_dict": {"features.0.weight": torch.zeros(4, 3, 3, 3)}, "extra": _Unsafe()}, path)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint that loads safely"):
        params_from_torch(path)


class _Unsafe:
    pass


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match="expected a non-empty state dict"):
        params_from_torch(path)


def test_missing_file(tmp_path):
    pytest.importorskip("torch")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        params_from_torch(tmp_path / "absent.pth")


def test_without_torch_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "gcc_jax\[torch\]"'):
        params_from_torch(tmp_path / "vgg19.pth")
