"""Three optimizer steps of gcc_jax's training step equal three steps of each official trainer.

For GL, BL and DM-Count, at batch 1 and 2: the official step in PyTorch
(``benchmarks/official_trainers.py``: the official network, ``torch.optim.Adam`` with the
trainer's rate and weight decay, GL's warm-up staircase, each loss summed over the batch as its
trainer sums it) and gcc_jax's own jitted step (``make_train_step`` with the objective of
``config.loss`` and the optimizer / schedule of the config's resolved recipe) start from the
same weights (gcc_jax's random initialisation, loaded into the torch network, and that
network converted back with ``params_from_torch``) and take three steps on the same three
batches. One step per epoch, so GL's warm-up gives the rates 0.1, 0.2, 0.3 × lr.

What is compared, and the float32 round-off each comparison allows (ε = float32 epsilon):

* the learning rate of every step, exactly (up to ε);
* the loss of every step: ``ε · N · |loss|`` with ``N = h·w·(M + 1)`` the length of the
  loss's largest reduction (density cells × head slots plus BL's background row), plus, from
  the second step on, the first-order effect ``Σ_i |∂loss/∂θ_i| · |Δθ_i|`` of the difference
  the parameters already have (torch's gradient times the measured difference);
* every parameter after the third step, coordinate by coordinate:
  ``Σ_t 2ε|θ_i| + κ_t |u_t,i| + lr_t · min(3, 2δ_t / |g̃_t,i|)``. The first term is the
  rounding of the updates themselves; the second the two Adams' arithmetic on an update
  ``u_t`` (optax takes the bias corrections ``1 − β^t`` in float32 from the rounded β: at the
  first steps ``1 − float32(0.999)`` is 1.3e-5 off the float64 value torch uses). The third is
  Adam's division of each coordinate's gradient ``g̃`` (torch's Adam input, gradient + weight
  decay · θ) by its own magnitude: a gradient round-off ``δ_t = ε · B·c² · a · max|g̃_t|``
  (``B·c²``: the longest sum a gradient takes, over every input pixel of the batch; ``a``: the
  loss's largest exponent, by which its float32 gradient magnifies a relative round-off) moves
  the update by ``≈ lr · δ/|g̃|``, capped where a gradient within round-off of zero can flip
  the update's sign. Coordinates whose gradient is exactly zero (dead units) get ``g̃ = wd·θ``
  on both sides and only the first two terms: there the weight decay decides the whole
  update, which pins its value and its form (L2 in the gradient, before Adam).

What each comparison catches (measured by breaking gcc_jax's side): a wrong weight decay (GL
1e-4, BL / DM-Count 1e-5: parameters 7-8·10⁴ times their bound), no warm-up (the rates, and
the parameters 3·10⁴ times their bound), GL's per-image-mean batch reduction at batch 2 (the
loss 11 times its bound, the parameters 2.5 times).

Skips without torch or geomloss (CI installs both).
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("geomloss")

from benchmarks.official_trainers import OfficialTrainer, official_network  # noqa: E402
from gcc_jax.models import params_from_torch  # noqa: E402
from gcc_jax.runtime import create_mesh, create_model, global_batch, load_config_module, resolve_recipe  # noqa: E402
from gcc_jax.training import (  # noqa: E402
    TrainState,
    create_learning_rate_fn,
    create_optimizer,
    make_loss_fn,
    make_train_step,
)
from gcc_jax.training.steps import TRAIN_BATCH_KEYS  # noqa: E402
from tiny_runs import REPO  # noqa: E402

EPS = float(np.finfo(np.float32).eps)
WIDTH, CROP, MAX_POINTS, STEPS = 1 / 16, 64, 4, 3
# How much each loss's float32 gradient magnifies a relative round-off: the largest exponent
# it takes (GL: potentials and costs of order 1 over the blur 0.01; BL: squared distances
# up to 2c² over 2σ² = 128 px²; DM-Count: squared distances up to 2c² over reg = 10).
AMPLIFICATION = {"gl": 1 / 0.01, "bl": 2 * CROP**2 / 128, "dm_count": 2 * CROP**2 / 10}


def _batches(batch_size, seed):
    """Three random batches: normalised-scale images, 1-4 heads per crop, BL's targets and
    source-image sizes."""
    rng = np.random.default_rng([seed, batch_size])
    batches = []
    for _ in range(STEPS):
        counts = rng.integers(1, MAX_POINTS + 1, batch_size)
        mask = np.arange(MAX_POINTS)[None] < counts[:, None]
        batches.append({
            "image": rng.standard_normal((batch_size, CROP, CROP, 3)).astype(np.float32),
            "points": (rng.uniform(0, CROP, (batch_size, MAX_POINTS, 2)) * mask[..., None]).astype(np.float32),
            "point_mask": mask,
            "targets": (rng.uniform(0.3, 1.0, (batch_size, MAX_POINTS)) * mask).astype(np.float32),
            "st_size": rng.uniform(CROP, 6 * CROP, batch_size).astype(np.float32),
        })  # fmt: skip
    return batches


def _initial_params(model, images, seed):
    """gcc_jax's random initialisation of ``seed`` with the last layer scaled so that the
    first batch's mean density is 0.05 per cell (≈ 3 people per crop, the heads' density):
    a start like a network's after a little training, where GL's entropy term — whose batch
    weighting differs between the two reductions — is large enough to tell them apart."""
    params = model.init(jax.random.key(seed), images[:1])["params"]
    scale = 0.05 / float(np.mean(model.apply({"params": params}, images)))
    last = params["head"]["conv3"]
    params["head"]["conv3"] = {"kernel": last["kernel"] * scale, "bias": last["bias"] * scale}
    return params


def _flat(params):
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def _torch_flat(network, attribute=None):
    """The torch network's parameters (or their ``.grad``) in gcc_jax's layout."""
    state = {name: (p if attribute is None else getattr(p, attribute)).detach().clone()
             for name, p in network.named_parameters()}  # fmt: skip
    return _flat(params_from_torch(state)["params"])


def run_both(loss, batch_size, *, seed=0, jax_overrides=None):
    """Three steps of both trainers from gcc_jax's random initialisation of ``seed``; returns
    what the test compares."""
    config = load_config_module(REPO / "configs" / "default.py").get_config()
    config.loss.name = loss
    config.model.width = WIDTH
    config.crop_size = CROP
    config.batch_size = batch_size
    config.dataset.max_points = MAX_POINTS
    config.update_from_flattened_dict(jax_overrides or {})
    config = resolve_recipe(config)
    model = create_model(config)
    batches = _batches(batch_size, seed)
    network = official_network(loss, _initial_params(model, batches[0]["image"], seed))
    trainer = OfficialTrainer(loss, network, crop_size=CROP)

    schedule = create_learning_rate_fn(config.optimizer, steps_per_epoch=1)
    mesh = create_mesh(jax.devices()[:1])
    state = TrainState.create(
        apply_fn=model.apply,
        params=params_from_torch(network.state_dict())["params"],
        tx=create_optimizer(config.optimizer, schedule),
    )
    step = make_train_step(mesh, loss_fn=make_loss_fn(config.loss, crop_size=CROP, mesh=mesh), learning_rate_fn=schedule)

    record = {"loss": loss, "torch_loss": [], "jax_loss": [], "torch_rate": [], "jax_rate": [], "grads": [], "params_before": [],
              "jax_params_before": [], "weight_decay": trainer.optimizer.param_groups[0]["weight_decay"]}  # fmt: skip
    initial_flat = _torch_flat(network)
    for epoch, batch in enumerate(batches):
        record["params_before"].append(_torch_flat(network))
        record["jax_params_before"].append(_flat(state.params))
        trainer.start_epoch(epoch)
        record["torch_rate"].append(trainer.optimizer.param_groups[0]["lr"])
        record["torch_loss"].append(trainer.step(batch))
        record["grads"].append(_torch_flat(network, "grad"))
        state, metrics = step(state, global_batch({k: batch[k] for k in TRAIN_BATCH_KEYS if k in batch}, mesh))
        record["jax_loss"].append(float(metrics["loss"]))
        record["jax_rate"].append(float(metrics["learning_rate"]))
    record["initial"] = initial_flat
    record["torch_final"] = _torch_flat(network)
    record["jax_final"] = _flat(state.params)
    return record


def loss_bounds(record):
    """Allowed |jax − torch| loss difference at each step (see the module docstring)."""
    reduction = (CROP // 8) ** 2 * (MAX_POINTS + 1)
    bounds = []
    for t, value in enumerate(record["torch_loss"]):
        drift = sum(
            float(np.sum(np.abs(record["grads"][t][k]) * np.abs(record["jax_params_before"][t][k] - record["params_before"][t][k])))
            for k in record["grads"][t]
        )  # fmt: skip
        bounds.append(EPS * reduction * abs(value) + drift)
    return bounds


def adam_arithmetic(step, b1=0.9, b2=0.999):
    """Relative difference of the two Adams' update sizes at ``step`` (1-based) from their
    arithmetic: optax forms the bias corrections ``1 − β^t`` in float32 from the rounded
    ``β`` (``1 − float32(0.999)`` is 1.3e-5 off), torch in float64; plus ~16 rounded float32
    operations (moments, square root, division, rate) between the two."""
    exact1, exact2 = 1 - b1**step, 1 - b2**step
    single1 = float(np.float32(1) - np.float32(b1) ** np.float32(step))
    single2 = float(np.float32(1) - np.float32(b2) ** np.float32(step))
    return abs(exact1 / single1 - 1) + abs(np.sqrt(single2 / exact2) - 1) + 16 * EPS


def parameter_bounds(record, batch_size):
    """Allowed |jax − torch| difference of every parameter after the last step."""
    bounds = {}
    for name, final in record["torch_final"].items():
        bound = np.zeros_like(final)
        after = record["params_before"][1:] + [record["torch_final"]]
        for t, rate in enumerate(record["torch_rate"]):
            theta, theta_next = record["params_before"][t][name], after[t][name]
            grad = record["grads"][t][name]
            adam_input = grad + record["weight_decay"] * theta
            delta = EPS * batch_size * CROP**2 * AMPLIFICATION[record["loss"]] * np.abs(adam_input).max()
            gain = np.where(grad == 0, 0.0, np.minimum(3.0, 2 * delta / np.maximum(np.abs(adam_input), 1e-30)))
            bound += (
                2 * EPS * np.maximum(np.abs(theta), np.abs(theta_next))  # rounding θ − update
                + np.abs(theta_next - theta) * adam_arithmetic(t + 1)
                + rate * gain
            )
        bounds[name] = bound
    return bounds


def compare(record, batch_size):
    """``(worst loss ratio, worst parameter ratio, worst relative difference)``: differences over
    their bounds (must be ≤ 1), and the issue's measure, ``‖Δθ‖ / ‖θ₃ − θ₀‖`` per tensor."""
    loss_ratio = max(
        abs(j - t) / bound for j, t, bound in zip(record["jax_loss"], record["torch_loss"], loss_bounds(record))
    )
    bounds = parameter_bounds(record, batch_size)
    parameter_ratio, relative = 0.0, 0.0
    for name, torch_value in record["torch_final"].items():
        difference = np.abs(record["jax_final"][name] - torch_value)
        over = np.divide(difference, bounds[name], out=np.where(difference > 0, np.inf, 0.0), where=bounds[name] > 0)
        parameter_ratio = max(parameter_ratio, float(np.max(over)))
        update = np.linalg.norm(torch_value - record["initial"][name])
        relative = max(relative, float(np.linalg.norm(difference) / update))
    return loss_ratio, parameter_ratio, relative


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("loss", ["gl", "bl", "dm_count"])
def test_three_steps_equal_the_official_trainer(loss, batch_size):
    record = run_both(loss, batch_size)
    np.testing.assert_allclose(record["jax_rate"], record["torch_rate"], rtol=4 * EPS)
    loss_ratio, parameter_ratio, relative = compare(record, batch_size)
    print(f"{loss} B={batch_size}: loss {loss_ratio:.3f}, parameters {parameter_ratio:.3f} of their bounds; "
          f"worst ‖Δθ‖/‖θ3 − θ0‖ {relative:.2e}")  # fmt: skip
    assert loss_ratio <= 1.0, record
    assert parameter_ratio <= 1.0
