"""python -m gcc_jax.convert_weights IN.pth OUT_DIR, end to end on small torch files."""

import json

import numpy as np
import pytest

from gcc_jax.convert_weights import main
from gcc_jax.models import VGG19Density, load_variables
from tolerances import vgg_rtol

torch = pytest.importorskip("torch")
from torch_vgg_reference import TorchVGGDensity, randomize_, torchvision_state_dict  # noqa: E402

NARROW = 1 / 16


def _compare(out_dir, net, seed=0):
    variables, options = load_variables(out_dir)
    images = np.random.default_rng(seed).standard_normal((1, 48, 64, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(VGG19Density(**options).apply(variables, images))
    assert np.max(np.abs(got - want)) <= vgg_rtol(options["width"]) * np.max(np.abs(want))
    return options


def test_bl_checkpoint_with_variant(tmp_path, capsys):
    net = randomize_(TorchVGGDensity(NARROW, "bilinear", "abs").eval())
    torch.save(net.state_dict(), tmp_path / "best_model.pth")
    assert main([str(tmp_path / "best_model.pth"), str(tmp_path / "out"), "--variant", "bl"]) == 0
    assert "head keep" in capsys.readouterr().out
    assert _compare(tmp_path / "out", net) == {"width": NARROW, "upsample": "bilinear", "output": "abs"}
    record = json.loads((tmp_path / "out" / "model.json").read_text())
    assert record["head"] == "keep" and record["source"].endswith("best_model.pth")
    assert record["torch_layout"] == "reg_layer"


def test_dm_count_checkpoint_needs_no_variant(tmp_path):
    net = randomize_(TorchVGGDensity(NARROW, "bilinear", "relu", density_layer=True).eval())
    torch.save(net.state_dict(), tmp_path / "model_nwpu.pth")
    assert main([str(tmp_path / "model_nwpu.pth"), str(tmp_path / "out")]) == 0
    assert _compare(tmp_path / "out", net)["output"] == "relu"


def test_gl_training_tar_with_explicit_options(tmp_path):
    net = randomize_(TorchVGGDensity(NARROW, "nearest", "abs").eval())
    torch.save({"epoch": 0, "model_state_dict": net.state_dict()}, tmp_path / "0_ckpt.tar")
    assert main([str(tmp_path / "0_ckpt.tar"), str(tmp_path / "out"), "--upsample", "nearest", "--output", "abs"]) == 0
    _compare(tmp_path / "out", net)


def test_imagenet_file_gets_a_new_head(tmp_path):
    net = TorchVGGDensity(NARROW)
    torch.save(torchvision_state_dict(net), tmp_path / "vgg19-dcbb9e9d.pth")
    assert main([str(tmp_path / "vgg19-dcbb9e9d.pth"), str(tmp_path / "out"), "--variant", "gl", "--seed", "1"]) == 0
    variables, _ = load_variables(tmp_path / "out")
    np.testing.assert_array_equal(variables["params"]["features"]["conv1_1"]["kernel"], net.features[0].weight.detach().numpy().transpose(2, 3, 1, 0))
    record = json.loads((tmp_path / "out" / "model.json").read_text())
    assert record["head"] == "init" and record["torch_layout"] == "imagenet"


def test_ambiguous_or_bad_input_fails_with_a_message(tmp_path, capsys):
    net = TorchVGGDensity(NARROW)
    torch.save(net.state_dict(), tmp_path / "gl.pth")
    assert main([str(tmp_path / "gl.pth"), str(tmp_path / "out")]) == 1
    assert "choose the head with variant" in capsys.readouterr().err
    assert main([str(tmp_path / "gl.pth"), str(tmp_path / "out"), "--variant", "gl", "--output", "relu"]) == 1
    assert "not both" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_text("hello")
    assert main([str(tmp_path / "junk.pth"), str(tmp_path / "out"), "--variant", "gl"]) == 1
    assert "junk.pth: not a PyTorch checkpoint" in capsys.readouterr().err
    assert main([str(tmp_path / "gl.pth"), str(tmp_path / "out"), "--variant", "gl"]) == 0
    assert main([str(tmp_path / "gl.pth"), str(tmp_path / "out"), "--variant", "gl"]) == 1
    assert "overwrite" in capsys.readouterr().err


def test_unreadable_files_fail_in_one_line_without_the_unsafe_advice(tmp_path, capsys):
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    assert main([str(tmp_path / "random.pth"), str(tmp_path / "out"), "--variant", "gl"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'random.pth'}: not a PyTorch checkpoint that loads safely (")
    assert "Traceback" not in err and "will likely succeed" not in err
    assert "never retries with weights_only=False" in err

    class RunsCode:
        def __reduce__(self):
            return (print, ("this must not run",))

    torch.save({"features.0.weight": RunsCode()}, tmp_path / "pickle.pth")
    assert main([str(tmp_path / "pickle.pth"), str(tmp_path / "out"), "--variant", "gl"]) == 1
    captured = capsys.readouterr()
    assert "this must not run" not in captured.out
    assert "GLOBAL print was not an allowed global" in captured.err  # torch's finding, kept
    assert "allowlist" not in captured.err and "will likely succeed" not in captured.err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        main([str(tmp_path / "missing.pth"), str(tmp_path / "out"), "--variant", "gl", "--debug"])
