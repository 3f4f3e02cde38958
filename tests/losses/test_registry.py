"""The loss registry (batch entries, hyper-parameters, reductions) and the heads of the official
networks (kept with the models, one per registered loss)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from gcc_jax import losses
from gcc_jax.models import OFFICIAL_HEADS, VGG19Density, official_head
from loss_cases import random_batch

# The keyword options of each loss that differ from its defaults, so that a reduction which
# ignored them would be caught (DM-Count's weights enter its reduction).
OPTIONS = {
    "gl": {"tau": 0.3, "blur": 0.02},
    "bl": {"sigma": 5.0},
    "dm_count": {"wot": 0.7, "wtv": 0.2},
    "l2": {"sigma": 4.0},
}


def test_head_variants_of_the_references():
    assert official_head("gl") == {"upsample": "nearest", "output": "abs"}
    assert official_head("l2") == {"upsample": "nearest", "output": "abs"}
    assert official_head("bl") == {"upsample": "bilinear", "output": "abs"}
    assert official_head("dm_count") == {"upsample": "bilinear", "output": "relu"}
    official_head("gl")["output"] = "relu"  # a copy: the table is not mutated
    assert official_head("gl")["output"] == "abs"
    VGG19Density(**official_head("dm_count"))
    with pytest.raises(ValueError, match="unknown loss 'dmcount'; the losses are gl, bl, dm_count, l2"):
        losses.get_loss("dmcount")
    with pytest.raises(ValueError, match="unknown loss 'dmcount'; the losses are gl, bl, dm_count, l2"):
        official_head("dmcount")


def test_every_loss_has_an_official_head():
    assert tuple(OFFICIAL_HEADS) == losses.LOSS_NAMES


def test_names_are_the_registry_keys():
    assert losses.LOSS_NAMES == ("gl", "bl", "dm_count", "l2")
    assert all(losses.LOSSES[name].name == name for name in losses.LOSS_NAMES)


def test_batch_keys():
    assert losses.get_loss("bl").batch_keys == ("points", "point_mask", "st_size", "targets")
    for name in ("gl", "dm_count", "l2"):
        assert losses.get_loss(name).batch_keys == ("points", "point_mask")


def _batch(seed=0):
    density, points, mask = random_batch(seed)
    rng = np.random.default_rng(seed + 1)
    return jnp.asarray(density), {
        "points": jnp.asarray(points),
        "point_mask": jnp.asarray(mask),
        "st_size": jnp.asarray([300.0, 90.0, 128.0], jnp.float32),
        "targets": jnp.asarray(rng.uniform(0.3, 1.0, mask.shape) * mask, jnp.float32),
    }


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_call_binds_the_batch_and_the_crop_size(name):
    density, batch = _batch()
    loss = losses.get_loss(name)
    got, got_terms = loss(density, batch, loss.hyper_parameters(OPTIONS[name], stride=8, crop_size=128))
    points, mask = batch["points"], batch["point_mask"]
    extra = {"crop_size": 128} if name == "gl" else {}
    if name == "bl":
        extra = {"st_size": batch["st_size"], "targets": batch["targets"]}
    want, want_terms = loss.function(density, points, mask, stride=8, **extra, **OPTIONS[name])
    np.testing.assert_array_equal(got, want)
    assert got_terms.keys() == want_terms.keys()


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_reduction_of_the_terms_is_the_loss(name):
    """On a batch of 3 (one image without heads), reducing the per-image terms gives the
    function's own batch loss: float32 round-off of a 3-term sum."""
    density, batch = _batch(seed=4)
    loss = losses.get_loss(name)
    hyper_parameters = loss.hyper_parameters(OPTIONS[name], stride=8, crop_size=128)
    value, terms = loss(density, batch, hyper_parameters)
    reduced = hyper_parameters.batch_loss(terms)
    scale = float(np.max(np.abs(np.stack([np.asarray(v) for v in terms.values()]))))
    np.testing.assert_allclose(reduced, value, rtol=0, atol=8 * np.finfo(np.float32).eps * max(scale, 1.0))


def test_dm_count_reduction_sums_the_ot_term():
    terms = {"ot": jnp.asarray([1.0, 2.0]), "count": jnp.asarray([3.0, 5.0]), "tv": jnp.asarray([7.0, 11.0])}
    got = losses.DMCountHyperParameters(wot=0.5, wtv=0.25).batch_loss(terms)
    np.testing.assert_allclose(got, 0.5 * 3.0 + 4.0 + 0.25 * 9.0)


def test_a_loss_that_needs_the_crop_size_says_so():
    with pytest.raises(ValueError, match="'gl' needs crop_size"):
        losses.get_loss("gl").hyper_parameters({}, stride=8)


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_hyper_parameters_are_frozen_checked_and_hashable(name):
    """One object per loss: equal settings written differently are equal (one jit cache entry),
    fields cannot be changed, a bad value or an unknown keyword fails when the object is made."""
    loss = losses.get_loss(name)
    one = loss.hyper_parameters({}, stride=8, crop_size=128)
    other = loss.hyper_parameters({}, stride=8.0, crop_size=128.0)
    assert one == other and hash(one) == hash(other)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.stride = 4
    with pytest.raises(ValueError, match="stride"):
        loss.hyper_parameters({}, stride=-8, crop_size=128)
    with pytest.raises(TypeError, match="blurr"):
        loss.hyper_parameters({"blurr": 0.1}, stride=8, crop_size=128)


def test_gl_hyper_parameters_are_written_once():
    """generalized_loss and generalized_loss_potentials take exactly the fields of
    GLHyperParameters, whose defaults are the official train.py's."""
    hyper = losses.GLHyperParameters(crop_size=512)
    assert (hyper.cost, hyper.blur, hyper.reach, hyper.scaling, hyper.tau) == (losses.perspective_cost, 0.01, 0.5, 0.5, 0.1)
    for function in (losses.generalized_loss, losses.generalized_loss_potentials):
        with pytest.raises(TypeError, match="crop_size"):
            function(jnp.zeros((1, 2, 2)), jnp.zeros((1, 1, 2)), jnp.ones((1, 1), bool))
