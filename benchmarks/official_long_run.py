"""Long runs of an official trainer (PyTorch) beside gcc_jax's, same start, same data.

    python benchmarks/official_long_run.py --loss gl --out benchmarks/results/official_long_run_gl.json
    python benchmarks/official_long_run.py --loss dm_count --out benchmarks/results/official_long_run_dm_count.json
    python benchmarks/official_long_run.py --loss bl --optimizer official --steps 400 --rates 1e-3,1e-4 \\
        --out benchmarks/results/bl_random_start.json

The parity tests check three optimizer steps; this trains for hundreds, to see whether
gcc_jax's training ends where the official trainer's does — in counts, localization and
sparsity — or whether small differences grow into different models:

* the official step: :class:`benchmarks.official_trainers.OfficialTrainer` of ``--loss`` (the
  official network with its head, the official loss computation, ``torch.optim.Adam`` with L2
  weight decay, the trainer's batch sum), ``--threads`` torch threads;
* gcc_jax: the program's own jitted step (:func:`gcc_jax.training.make_train_step`, the loss's
  objective and the config's optimizer);
* both from the same random VGG19Density of width ``--width`` (gcc_jax's initialisation of
  ``--seed``, loaded into the torch network; the gcc_jax side takes that network's weights
  back through :func:`gcc_jax.models.params_from_torch`) and the same batches: random
  ``--crop`` crops of the synthetic crowds (``gcc_jax.data``'s ``synthetic_crowd``, 256 × 256
  images of up to 150 people), ``--batch`` per step, ``--steps`` steps (consecutive epochs of
  the training split);
* the optimizer (``--optimizer``), the same on both sides:

  - ``study`` (default): the loss comparison study's (``benchmarks/compare_losses.py``'s
    :func:`~benchmarks.compare_losses.study_config`: ``configs/synthetic.py``, Adam at 1e-3
    with a cosine decay to 0 over the ``--steps``, weight decay 1e-5, no warm-up); the torch
    side decays its rate with ``torch.optim.lr_scheduler.CosineAnnealingLR``;
  - ``official``: the official trainer's (``configs/default.py``'s optimizer with the loss's
    resolved recipe: its weight decay, GL's warm-up staircase, a constant rate), at each rate
    of ``--rates``;

* variants (``--variants``) of the loss's options; BL's: the 2021 background (the default
  loss), the 2019 background (ratio 0.15, that code's default), no background, and
  ``no_bg_then_bg2021`` (no background for the first half of the steps, the 2021 background
  after). GL and DM-Count have one, ``default``.

Per step it records the loss and the mean predicted and true count of the batch (each side's
own network). At the end both sides' final weights, in gcc_jax's layout, are evaluated the same
way as ``compare_losses.py`` evaluates its runs (:mod:`gcc_jax.runtime`, full images):
validation and test MAE; localization on the test split at ``--radius`` px with the peak
threshold chosen on validation (GL's detections moved by its half-cell offset,
:func:`~benchmarks.compare_losses.cell_shift`); sparsity, the fraction of test-map cells below
1e-3. A run "collapses" when its predicted counts go to ~0 and stay there. Writes ``--out``
(JSON, with the commit and the machine), a Markdown table and a PNG of the count curves
beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine, machine_label  # noqa: E402

# loss -> variant name -> the loss's options (on top of the config's, i.e. the official
# defaults), or a list of (fraction of the steps at which a phase starts, options) phases.
VARIANTS = {
    "bl": {
        "bg2021": {},
        "bg2019": {"background": "2019", "background_ratio": 0.15},
        "no_bg": {"use_background": False},
        # Start without the background term, switch the 2021 background on halfway.
        "no_bg_then_bg2021": [(0, {"use_background": False}), (0.5, {})],
    },
    "gl": {"default": {}},
    "dm_count": {"default": {}},
}
DEFAULT_VARIANTS = {"bl": ("bg2021", "bg2019", "no_bg"), "gl": ("default",), "dm_count": ("default",)}
OPTIMIZERS = ("study", "official")
COLLAPSED_BELOW = 0.05  # a final mean predicted count below this fraction of the truth
IMPLEMENTATIONS = ("official (torch)", "gcc_jax")


def phases(loss: str, variant: str, steps: int) -> list[tuple[int, dict]]:
    """``[(first step, loss options), ...]`` of a variant over a run of ``steps`` steps."""
    value = VARIANTS[loss][variant]
    if isinstance(value, dict):
        return [(0, value)]
    return [(int(round(fraction * steps)), options) for fraction, options in value]


def training_batches(args) -> tuple[list[dict], int]:
    """``(batches, steps per epoch)``: ``--steps`` training batches of the synthetic crowds
    (consecutive epochs), as numpy."""
    from gcc_jax.data import make_train_dataset

    batches, epoch, steps_per_epoch = [], 0, None
    while len(batches) < args.steps:
        epoch_batches = [dict(b) for b in make_train_dataset(
            "synthetic_crowd", split="train", crop_size=args.crop, batch_size=args.batch,
            max_points=args.max_points, seed=args.seed, epoch=epoch,
        )]  # fmt: skip
        steps_per_epoch = steps_per_epoch or len(epoch_batches)
        batches += epoch_batches
        epoch += 1
    return batches[: args.steps], steps_per_epoch


def run_config(args, options: dict, rate: float | None, steps_per_epoch: int):
    """The run's config: ``--optimizer``'s base config for ``--loss`` with ``options`` and the
    network / data sizes of ``args``; ``rate`` replaces the learning rate unless ``None``."""
    from gcc_jax.runtime import load_config_module, resolve_recipe

    if args.optimizer == "study":
        from benchmarks.compare_losses import study_config

        config = study_config(args.loss, epochs=math.ceil(args.steps / steps_per_epoch), l2_sigma=4.0, seed=args.seed)
    else:  # configs/default.py (the recipe fields unset) with the data of configs/synthetic.py
        synthetic = load_config_module(ROOT / "configs" / "synthetic.py").get_config()
        config = load_config_module(ROOT / "configs" / "default.py").get_config()
        config.dataset = synthetic.dataset
        config.eval_batch_size = synthetic.eval_batch_size
        config.loss.name = args.loss
        config.seed = args.seed
    config.loss[args.loss].update(options)
    config.model.width = args.width
    config.crop_size = args.crop
    config.batch_size = args.batch
    config.dataset.max_points = args.max_points
    if rate is not None:
        config.optimizer.learning_rate = rate
    return resolve_recipe(config)


def learning_rates(args, steps_per_epoch: int) -> tuple[float, ...]:
    """``--rates``, or the base config's own learning rate."""
    return args.rates or (run_config(args, {}, None, steps_per_epoch).optimizer.learning_rate,)


def initial_params(config, seed: int) -> dict:
    """gcc_jax's random initialisation (``seed``) of the network of ``config``: what a run
    from scratch starts with (features Kaiming normal, biases 0, regression head N(0, 0.01))."""
    import jax

    from gcc_jax.runtime import create_model

    dummy = np.zeros((1, config.crop_size, config.crop_size, 3), np.float32)
    return create_model(config).init(jax.random.key(seed), dummy)["params"]


def run_torch(args, variant: str, config, batches, steps_per_epoch: int) -> tuple[dict, dict]:
    """``(per-step record, final params in gcc_jax's layout)`` of the official trainer."""
    import torch

    from benchmarks.official_trainers import OfficialTrainer, official_network
    from gcc_jax.models import params_from_torch

    network = official_network(args.loss, initial_params(config, args.seed))
    trainer = OfficialTrainer(
        args.loss, network, crop_size=args.crop,
        learning_rate=config.optimizer.learning_rate, weight_decay=config.optimizer.weight_decay,
    )  # fmt: skip
    trainer.warmup_epochs = config.optimizer.warmup_epochs
    scheduler = None
    if config.optimizer.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(trainer.optimizer, T_max=len(batches))
    switches = dict(phases(args.loss, variant, len(batches)))
    record = {"loss": [], "predicted": [], "true": []}
    start = time.process_time()
    for index, batch in enumerate(batches):
        if index % steps_per_epoch == 0:
            trainer.start_epoch(index // steps_per_epoch)
        if index in switches:
            trainer.loss_options = dict(switches[index])
        record["loss"].append(trainer.step(batch))
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            images = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
            record["predicted"].append(float(network(images).sum((1, 2)).mean()))
        record["true"].append(float(batch["point_mask"].sum(1).mean()))
        report_progress(IMPLEMENTATIONS[0], index, len(batches), record)
    record["cpu_s"] = time.process_time() - start
    state = {name: value.detach() for name, value in network.state_dict().items()}
    return record, params_from_torch(state)["params"]


def run_jax(args, variant: str, config, batches, steps_per_epoch: int) -> tuple[dict, dict]:
    """``(per-step record, final params)`` of gcc_jax's train step."""
    import jax
    import jax.numpy as jnp

    from benchmarks.official_trainers import official_network
    from gcc_jax.models import params_from_torch
    from gcc_jax.runtime import create_mesh, create_model, global_batch
    from gcc_jax.training import TrainState, create_learning_rate_fn, create_optimizer, make_loss_fn, make_train_step
    from gcc_jax.training.steps import TRAIN_BATCH_KEYS

    params = params_from_torch(official_network(args.loss, initial_params(config, args.seed)).state_dict())["params"]
    model = create_model(config)
    mesh = create_mesh(jax.devices()[:1])
    schedule = create_learning_rate_fn(config.optimizer, steps_per_epoch=steps_per_epoch, total_steps=len(batches))
    state = TrainState.create(apply_fn=model.apply, params=params, tx=create_optimizer(config.optimizer, schedule))
    rate = config.optimizer.learning_rate
    steps = {}
    for first, options in phases(args.loss, variant, len(batches)):
        loss_config = run_config(args, options, rate, steps_per_epoch).loss
        loss_fn = make_loss_fn(loss_config, crop_size=args.crop, mesh=mesh)
        steps[first] = make_train_step(mesh, loss_fn=loss_fn, learning_rate_fn=schedule)
    predict = jax.jit(lambda p, x: model.apply({"params": p}, x).sum((1, 2)))
    record = {"loss": [], "predicted": [], "true": []}
    start = time.process_time()
    step = steps[0]
    for index, batch in enumerate(batches):
        step = steps.get(index, step)
        inputs = global_batch({k: batch[k] for k in TRAIN_BATCH_KEYS if k in batch}, mesh)
        state, metrics = step(state, inputs)
        record["loss"].append(float(metrics["loss"]))
        record["predicted"].append(float(predict(state.params, jnp.asarray(batch["image"])).mean()))
        record["true"].append(float(batch["point_mask"].sum(1).mean()))
        report_progress(IMPLEMENTATIONS[1], index, len(batches), record)
    record["cpu_s"] = time.process_time() - start
    return record, jax.device_get(state.params)


def report_progress(implementation: str, index: int, steps: int, record: dict, *, every: int = 50) -> None:
    """Prints a line every ``every`` steps: the step, its loss, the batch's mean predicted / true count."""
    if (index + 1) % every == 0 or index + 1 == steps:
        print(f"  {implementation} step {index + 1}/{steps}: loss {record['loss'][-1]:.4g}, count "
              f"{record['predicted'][-1]:.2f} (true {record['true'][-1]:.2f})", flush=True)  # fmt: skip


def split_records(config, params, split: str) -> list[dict]:
    """Per-image records (``density``, ``points``, ...) of ``params`` on a synthetic split
    (full images), as ``compare_losses.py`` evaluates a run."""
    import jax

    from gcc_jax.runtime import (
        create_model,
        iterate_predictions,
        local_eval_mesh,
        make_eval_batches,
        make_predict_fn,
        replicated_sharding,
    )

    mesh = local_eval_mesh(config.eval_batch_size)
    predict = make_predict_fn(create_model(config).apply, mesh)
    variables = jax.device_put({"params": params}, replicated_sharding(mesh))
    return list(iterate_predictions(predict, variables, make_eval_batches(config, split), mesh))


def evaluation(config, params, *, radius: float, pixel_offset: float) -> dict:
    """Validation / test counting, test localization (threshold chosen on validation) and
    test-map sparsity of the final ``params``."""
    from benchmarks.compare_losses import cell_shift, counting, localization, sparsity

    val, test = split_records(config, params, "val"), split_records(config, params, "test")
    shift = pixel_offset + cell_shift(config)
    located, _, _ = localization(val, test, radius=radius, pixel_offset=shift)
    return {
        "val_mae": counting(val)["mae"],
        "val_mean_predicted": float(np.mean([r["density"].sum() for r in val])),
        "val_mean_true": float(np.mean([len(r["points"]) for r in val])),
        "test_mae": counting(test)["mae"],
        "localization": {**located, "pixel_offset": shift},
        "sparsity": sparsity([r["density"] for r in test]),
    }


def _summary(record: dict) -> dict:
    tail = max(len(record["predicted"]) // 10, 1)
    final_ratio = float(np.mean(record["predicted"][-tail:]) / max(np.mean(record["true"][-tail:]), 1e-9))
    return {
        **record,
        "final_count_ratio": final_ratio,  # mean predicted / true count over the last 10 % of steps
        "collapsed": final_ratio < COLLAPSED_BELOW,
    }


def rounded(value):
    """``value`` with every float rounded to 5 significant digits (a compact results file)."""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def markdown(rows, *, loss: str, radius: float, machine: str, command: str) -> str:
    lines = [
        "| variant | lr | implementation | final predicted / true count (train, last 10 %) | collapsed | val MAE | "
        "val mean predicted (true) | test MAE | threshold | precision | recall | F1 | cells < 1e-3 | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        located = r["localization"]
        lines.append(
            f"| {r['variant']} | {r['learning_rate']:g} | {r['implementation']} | {r['final_count_ratio']:.3f} | "
            f"{'yes' if r['collapsed'] else 'no'} | {r['val_mae']:.2f} | {r['val_mean_predicted']:.2f} "
            f"({r['val_mean_true']:.2f}) | {r['test_mae']:.2f} | {located['threshold']:.2f} | "
            f"{located['precision']:.3f} | {located['recall']:.3f} | {located['f1']:.3f} | "
            f"{100 * r['sparsity']:.1f}% | {r['cpu_s']:.0f} |"
        )
    lines += [
        "",
        f"Loss {loss}. Localization on the test split at a {radius:g} px radius, threshold chosen on validation. "
        f"Machine: {machine}. Command: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def figure(rows, path: str, *, loss: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["variant"], r["learning_rate"]) for r in rows}, key=lambda k: (k[1], k[0]))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys) + 0.6, 2.8), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for r in rows:
            if (r["variant"], r["learning_rate"]) == key:
                style = "-" if r["implementation"] == IMPLEMENTATIONS[0] else "--"
                ax.plot(r["predicted"], style, label=r["implementation"])
                truth = r["true"]
        ax.plot(truth, ":", color="grey", label="true")
        ax.set_title(f"{loss} {key[0]}, lr {key[1]:g}", fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("mean count per crop")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    from PIL import Image

    # A 64-colour palette keeps the PNG small.
    Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]).quantize(64).save(path, optimize=True)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=tuple(VARIANTS), default="gl")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="study",
                        help="study: compare_losses.py's (cosine from 1e-3); official: the official trainer's")
    parser.add_argument("--variants", type=lambda s: tuple(s.split(",")), default=None,
                        help="comma-separated variants of the loss (default: bl: bg2021,bg2019,no_bg; gl, dm_count: default)")
    parser.add_argument("--rates", type=lambda s: tuple(float(v) for v in s.split(",")), default=None,
                        help="learning rates (default: the --optimizer config's own)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--width", type=float, default=1 / 8)
    parser.add_argument("--max_points", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--radius", type=float, default=8.0, help="localization matching radius, px")
    parser.add_argument("--pixel_offset", type=float, default=0.5,
                        help="added to detected pixel indices (0.5 = pixel centres, the annotations' convention)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="JSON path (a .md table and a .png figure beside it)")
    args = parser.parse_args(argv)
    args.variants = args.variants or DEFAULT_VARIANTS[args.loss]
    unknown = [v for v in args.variants if v not in VARIANTS[args.loss]]
    if unknown:
        parser.error(f"--variants: {unknown} are not variants of {args.loss}; choose from {tuple(VARIANTS[args.loss])}")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    info = describe_machine()  # with the commit measured (and whether the tree differed from it)
    machine = machine_label(info)
    command = ("python benchmarks/official_long_run.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    print(machine, flush=True)
    batches, steps_per_epoch = training_batches(args)
    rows = []
    for rate in learning_rates(args, steps_per_epoch):
        for variant in args.variants:
            # The config of the first phase: the optimizer, network and evaluation settings.
            config = run_config(args, phases(args.loss, variant, len(batches))[0][1], rate, steps_per_epoch)
            for implementation, run in zip(IMPLEMENTATIONS, (run_torch, run_jax)):
                start = time.perf_counter()
                record, params = run(args, variant, config, batches, steps_per_epoch)
                result = _summary(record)
                result.update(evaluation(config, params, radius=args.radius, pixel_offset=args.pixel_offset))
                result["wall_s"] = time.perf_counter() - start
                row = {"variant": variant, "learning_rate": rate, "implementation": implementation, **result}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    info["load_1min_end"] = round(os.getloadavg()[0], 2)
    table = markdown(rows, loss=args.loss, radius=args.radius, machine=machine, command=command)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        settings["steps_per_epoch"] = steps_per_epoch
        result = {"machine": info, "command": command, "settings": settings, "rows": rows}
        with open(args.out, "w") as handle:
            json.dump(rounded(result), handle)
        base = os.path.splitext(args.out)[0]
        with open(base + ".md", "w") as handle:
            handle.write(table)
        figure(rows, base + ".png", loss=args.loss)


if __name__ == "__main__":
    main()
