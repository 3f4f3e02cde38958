"""Optimizer (torch-style Adam + L2), GL's warm-up schedule, model and train-state creation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gcc_jax.models import save_variables
from gcc_jax.runtime import create_mesh, create_model
from gcc_jax.training import create_learning_rate_fn, create_optimizer, create_train_state
from tolerances import EPS32


def _optimizer_config(**overrides):
    config = ml_collections.ConfigDict(
        {"learning_rate": 1e-2, "weight_decay": 0.1, "warmup_epochs": 0, "schedule": "constant", "b1": 0.9,
         "b2": 0.999, "eps": 1e-8}
    )
    config.update(overrides)
    return config


def test_optimizer_matches_torch_adam_with_weight_decay():
    torch = pytest.importorskip("torch")
    config = _optimizer_config()
    rng = np.random.default_rng(0)
    start = rng.normal(size=5).astype(np.float32)
    targets = rng.normal(size=(4, 5)).astype(np.float32)

    scales = np.arange(1, 6, dtype=np.float32)

    def loss(w, t, scales):  # a different quadratic each step
        return ((w - t) ** 2 * scales).sum()

    weight = torch.nn.Parameter(torch.tensor(start))
    reference = torch.optim.Adam([weight], lr=config.learning_rate, weight_decay=config.weight_decay)
    for t in targets:
        reference.zero_grad()
        loss(weight, torch.tensor(t), torch.tensor(scales)).backward()
        reference.step()

    tx = create_optimizer(config, create_learning_rate_fn(config, steps_per_epoch=1))
    params = jnp.asarray(start)
    state = tx.init(params)
    for t in targets:
        grads = jax.grad(loss)(params, jnp.asarray(t), jnp.asarray(scales))
        updates, state = tx.update(grads, state, params)
        params = params + updates
    # Each of the 4 steps rounds θ + update (u·|θ|, |θ| ~ 1) and computes the update (~lr) with
    # ~10 roundings in either library's form of the bias correction: ≤ 4·(u + 10u·lr) ≈ 3e-7
    # relative. 1e-5 / 1e-6 leave room for an element near 0 whose Adam step (≈ ±lr whatever
    # |g|) could differ between the two forms where |g| is near ε — not the case with these
    # quadratics, whose gradients are O(1).
    np.testing.assert_allclose(params, weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_weight_decay_is_l2_not_decoupled():
    """With a zero gradient, torch Adam's L2 decay moves a weight by lr (Adam normalises wd·θ),
    AdamW's by lr·wd·θ: the first step tells them apart."""
    config = _optimizer_config(learning_rate=1e-3, weight_decay=1e-2)
    tx = create_optimizer(config, create_learning_rate_fn(config, steps_per_epoch=1))
    params = jnp.asarray([2.0])
    updates, _ = tx.update(jnp.zeros(1), tx.init(params), params)
    # −lr·m̂/(√v̂ + ε) with m̂ = √v̂ = wd·θ = 0.02: the ε = 1e-8 in the denominator moves it by
    # ε/0.02 = 5e-7 relative. The bias corrections 1 − b1 and 1 − b2 cancel in float32: their
    # relative errors u·b/(1 − b) (u = EPS32/2) reach m̂ fully and √v̂ by half.
    b1, b2 = 0.9, 0.999
    rtol = 5e-7 + (EPS32 / 2) * (b1 / (1 - b1) + 0.5 * b2 / (1 - b2)) + 4 * EPS32
    np.testing.assert_allclose(updates, [-1e-3], rtol=rtol)


def test_warmup_is_gl_staircase():
    config = _optimizer_config(learning_rate=1e-5, warmup_epochs=10)
    schedule = create_learning_rate_fn(config, steps_per_epoch=3)
    rates = np.asarray([schedule(step) for step in range(36)])
    expected = [1e-5 * min((step // 3 + 1) / 10, 1.0) for step in range(36)]
    np.testing.assert_allclose(rates, expected, rtol=4 * EPS32)  # lr·(e + 1)/10 in float32: ≤ 3 roundings


def test_cosine_decay_after_warmup():
    config = _optimizer_config(learning_rate=1e-3, warmup_epochs=2, schedule="cosine")
    schedule = create_learning_rate_fn(config, steps_per_epoch=5, total_steps=40)
    expected = [1e-3 * min((s // 5 + 1) / 2, 1.0) * 0.5 * (1 + np.cos(np.pi * s / 40)) for s in range(41)]
    # float32 cos(π s/40) is off by ~u absolutely (its argument rounds by u·π), which near the end
    # is a large relative error of a rate near 0: relative 8u elsewhere, absolute 8u·lr.
    np.testing.assert_allclose([schedule(s) for s in range(41)], expected, rtol=8 * EPS32, atol=8 * EPS32 * 1e-3)
    with pytest.raises(ValueError, match="total_steps"):
        create_learning_rate_fn(config, steps_per_epoch=5)


def test_constant_rate_without_warmup():
    schedule = create_learning_rate_fn(_optimizer_config(learning_rate=3e-4), steps_per_epoch=5)
    assert float(schedule(0)) == pytest.approx(3e-4) and float(schedule(1000)) == pytest.approx(3e-4)


def _run_config(tmp_path=None, **model):
    config = ml_collections.ConfigDict(
        {
            "seed": 0,
            "crop_size": 32,
            "loss": {"name": "dm_count"},
            "model": {"width": 1 / 16, "dtype": "float32", "init_checkpoint": None},
        }
    )
    config.model.update(model)
    return config


def test_model_takes_the_losses_head():
    config = _run_config()
    model = create_model(config)
    assert (model.upsample, model.output, model.width) == ("bilinear", "relu", 1 / 16)


def test_train_state_is_replicated_and_seeded():
    config = _run_config()
    model = create_model(config)
    tx = create_optimizer(_optimizer_config(), create_learning_rate_fn(_optimizer_config(), 1))
    mesh = create_mesh()
    state = create_train_state(config, model, tx, mesh)
    again = create_train_state(config, model, tx, mesh)
    leaf = jax.tree.leaves(state.params)[0]
    assert leaf.sharding.is_fully_replicated and int(state.step) == 0
    jax.tree.map(np.testing.assert_array_equal, state.params, again.params)


def test_train_state_from_init_checkpoint(tmp_path):
    config = _run_config()
    model = create_model(config)
    tx = create_optimizer(_optimizer_config(), create_learning_rate_fn(_optimizer_config(), 1))
    source = create_train_state(config, model, tx, create_mesh())
    save_variables(tmp_path / "init", {"params": source.params}, {"width": 1 / 16, "upsample": "nearest", "output": "abs"})
    config.model.init_checkpoint = str(tmp_path / "init")
    config.seed = 1  # ignored: the checkpoint decides
    state = create_train_state(config, model, tx, create_mesh())
    jax.tree.map(np.testing.assert_array_equal, state.params, source.params)
    config.model.width = 1 / 8
    with pytest.raises(ValueError, match="width"):
        create_train_state(config, create_model(config), tx, create_mesh())


def test_an_unresolved_recipe_is_named_not_a_deep_optax_error():
    config = _optimizer_config(weight_decay=None, learning_rate=None)
    with pytest.raises(ValueError, match=r"config.optimizer.weight_decay unset: resolve .*resolve_recipe"):
        create_optimizer(config, lambda step: 1e-3)
    with pytest.raises(ValueError, match=r"config.optimizer.learning_rate unset"):
        create_learning_rate_fn(config, steps_per_epoch=1)
