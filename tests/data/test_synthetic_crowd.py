"""The synthetic crowd source: determinism, options, empty images, rendering."""

import numpy as np
import pytest
from PIL import Image

from gcc_jax.data import SyntheticCrowdOptions
from gcc_jax.data.render_synthetic import main as render_main
from gcc_jax.data.synthetic import _SKIN, generate_example

SMALL = SyntheticCrowdOptions(height=64, width=80, num_train=6, num_val=2, num_test=2, max_people=40)


def test_examples_are_deterministic_and_depend_on_seed_split_index():
    a = generate_example(SMALL, "train", 3)
    b = generate_example(SyntheticCrowdOptions.from_value(SMALL.to_dict()), "train", 3)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["points"], b["points"])
    for other in (generate_example(SMALL, "train", 4), generate_example(SMALL, "val", 1),
                  generate_example(SyntheticCrowdOptions(**{**SMALL.to_dict(), "seed": 1}), "train", 3)):
        assert not np.array_equal(a["image"], other["image"])


def test_images_points_and_counts():
    counts = []
    for index in range(SMALL.num_train):
        example = generate_example(SMALL, "train", index)
        assert example["image"].shape == (64, 80, 3) and example["image"].dtype == np.uint8
        points = example["points"]
        assert points.dtype == np.float32 and points.shape[1] == 2
        assert np.all((points >= 0) & (points <= [80, 64]))
        counts.append(len(points))
    assert max(counts) <= SMALL.max_people and len(set(counts)) > 1
    empty = SyntheticCrowdOptions(**{**SMALL.to_dict(), "empty_fraction": 1.0})
    assert all(len(generate_example(empty, "test", i)["points"]) == 0 for i in range(2))


def test_heads_are_drawn_where_the_points_are():
    options = SyntheticCrowdOptions(height=96, width=96, num_train=1, min_people=20, max_people=20,
                                    empty_fraction=0.0, clutter=0, noise_std=0.0, head_radius_far=4, head_radius_near=6)
    example = generate_example(options, "train", 0)
    image = example["image"].astype(np.float32)

    def skin_coloured(x, y):
        # A head's centre is its skin colour (a palette entry plus a little per-person tint);
        # heads never overlap, so no centre is covered.
        return np.abs(_SKIN - image[int(y), int(x)]).sum(axis=1).min() < 60

    assert all(skin_coloured(x, y) for x, y in example["points"])
    random_points = np.random.default_rng(0).uniform(0, 95, (200, 2))
    assert np.mean([skin_coloured(x, y) for x, y in random_points]) < 0.5


def test_options_validation():
    assert SyntheticCrowdOptions.from_value(None) == SyntheticCrowdOptions()
    assert SyntheticCrowdOptions.from_value({"num_train": 5}).num_examples("train") == 5
    with pytest.raises(ValueError, match="unknown synthetic option"):
        SyntheticCrowdOptions.from_value({"num_images": 5})
    with pytest.raises(ValueError, match="min_people"):
        SyntheticCrowdOptions(min_people=10, max_people=5)
    with pytest.raises(ValueError, match="split"):
        SMALL.num_examples("validation")
    with pytest.raises(ValueError, match="out of range"):
        generate_example(SMALL, "val", 2)


def test_render_cli_writes_pngs(tmp_path, capsys):
    render_main(["--out", str(tmp_path), "--num", "2", "--option", "height=48", "--option", "width=40"])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["train_000.png", "train_000_points.png", "train_001.png", "train_001_points.png"]
    with Image.open(tmp_path / "train_000.png") as image:
        assert image.size == (40, 48)
    assert "heads" in capsys.readouterr().out
