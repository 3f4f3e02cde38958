"""benchmarks/official_long_run.py's settings (variants, phases, the study's and the official
optimizer). The long runs themselves take minutes per loss and are not run here."""

import pytest

from benchmarks import official_long_run
from benchmarks.compare_losses import study_config
from gcc_jax.runtime import resolve_recipe


def test_background_switched_on_halfway():
    assert official_long_run.phases("bl", "no_bg_then_bg2021", 400) == [(0, {"use_background": False}), (200, {})]
    assert official_long_run.phases("gl", "default", 400) == [(0, {})]


@pytest.mark.parametrize("loss, variants", [("gl", ("default",)), ("dm_count", ("default",)),
                                            ("bl", ("bg2021", "bg2019", "no_bg"))])  # fmt: skip
def test_default_variants(loss, variants):
    assert official_long_run.parse_args(["--loss", loss]).variants == variants


def test_unknown_variant_is_refused_naming_the_choices(capsys):
    with pytest.raises(SystemExit):
        official_long_run.parse_args(["--loss", "gl", "--variants", "bg2019"])
    assert "not variants of gl; choose from ('default',)" in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["gl", "dm_count"])
def test_study_optimizer_is_compare_losses_setting(loss):
    """At its defaults the script trains what compare_losses.py trains: the same config."""
    args = official_long_run.parse_args(["--loss", loss])
    config = official_long_run.run_config(args, {}, None, steps_per_epoch=40)
    assert config.to_dict() == resolve_recipe(study_config(loss, epochs=10, l2_sigma=4.0, seed=0)).to_dict()
    optimizer = config.optimizer
    assert (optimizer.learning_rate, optimizer.schedule, optimizer.weight_decay) == (1e-3, "cosine", 1e-5)


def test_official_optimizer_is_the_recipe_at_the_given_rate():
    args = official_long_run.parse_args(["--loss", "bl", "--optimizer", "official"])
    config = official_long_run.run_config(args, {"use_background": False}, 1e-4, steps_per_epoch=40)
    optimizer = config.optimizer
    assert optimizer.learning_rate == 1e-4 and optimizer.schedule == "constant"
    assert (optimizer.weight_decay, optimizer.warmup_epochs) == (1e-4, 0)  # BL's trainer
    assert config.dataset.name == "synthetic_crowd" and not config.loss.bl.use_background
    gl_args = official_long_run.parse_args(["--optimizer", "official"])
    gl = official_long_run.run_config(gl_args, {}, None, steps_per_epoch=40)
    assert (gl.optimizer.learning_rate, gl.optimizer.warmup_epochs) == (1e-5, 10)  # GL's trainer: 1e-5, warm-up
