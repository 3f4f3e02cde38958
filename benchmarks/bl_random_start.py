"""BL from a random start: the official BL trainer (PyTorch) beside gcc_jax's, same start, same data.

    python benchmarks/bl_random_start.py --out benchmarks/results/bl_random_start.json

BL with its background model has been seen to end at an all-zero density map when trained
from a random initialisation (the official code always starts from ImageNet weights). This
study asks whether the official BL does the same from that start, and what avoids it:

* the official step: :class:`benchmarks.official_trainers.OfficialTrainer` (``Post_Prob`` +
  ``Bay_Loss``, ``torch.optim.Adam`` with BL's weight decay 1e-4, the official network with
  bilinear upsampling and ``abs``), written from BL's ``utils/regression_trainer.py``;
* gcc_jax: the program's own jitted step (:func:`gcc_jax.training.make_train_step`, the BL
  objective and the optimizer of the resolved BL recipe);
* both from the same random VGG19Density of width ``--width`` (gcc_jax's initialisation of
  ``--seed``, the one its runs from scratch start with, loaded into the torch network; the
  gcc_jax side takes that network's weights back through
  :func:`gcc_jax.models.params_from_torch`) and the same batches: random
  ``--crop`` crops of the synthetic crowds (``gcc_jax.data``'s ``synthetic_crowd``,
  256 × 256 images of up to 150 people), ``--batch`` per step, ``--steps`` steps;
* variants (``--variants``): the 2021 background (the default loss), the 2019 background
  (ratio 0.15, that code's default), no background, and ``no_bg_then_bg2021`` (no background
  for the first half of the steps, the 2021 background after), at each rate of ``--rates``.

Per step it records the loss and the mean predicted and true count of the batch; at the end
the validation MAE over the synthetic ``val`` split (full images) and the mean predicted
count there. A run "collapses" when its predicted counts go to ~0 and stay there. Writes
``--out`` (JSON), a Markdown table and a PNG of the count curves beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine, machine_label  # noqa: E402

# name -> BL options (on top of the config's, i.e. the 2021 official defaults), or a list of
# (first step, options) phases.
VARIANTS = {
    "bg2021": {},
    "bg2019": {"background": "2019", "background_ratio": 0.15},
    "no_bg": {"use_background": False},
    # Start without the background term, switch the 2021 background on halfway.
    "no_bg_then_bg2021": [(0, {"use_background": False}), (0.5, {})],
}


def phases(variant, steps: int) -> list[tuple[int, dict]]:
    """``[(first step, BL options), ...]`` of a variant over a run of ``steps`` steps."""
    value = VARIANTS[variant]
    if isinstance(value, dict):
        return [(0, value)]
    return [(int(round(fraction * steps)), options) for fraction, options in value]
COLLAPSED_BELOW = 0.05  # a final mean predicted count below this fraction of the truth


def training_batches(args) -> list[dict]:
    """``--steps`` training batches of the synthetic crowds (consecutive epochs), as numpy."""
    from gcc_jax.data import make_train_dataset

    batches, epoch = [], 0
    while len(batches) < args.steps:
        epoch_batches = make_train_dataset(
            "synthetic_crowd", split="train", crop_size=args.crop, batch_size=args.batch,
            max_points=args.max_points, seed=args.seed, epoch=epoch,
        )  # fmt: skip
        batches += [dict(b) for b in epoch_batches]
        epoch += 1
    return batches[: args.steps]


def validation_images():
    """``(images [N, 256, 256, 3] normalised, counts [N])`` of the synthetic ``val`` split."""
    from gcc_jax.data import make_eval_dataset

    images, counts = [], []
    for batch in make_eval_dataset("synthetic_crowd", split="val", batch_size=1, pad_multiple=16):
        images.append(np.asarray(batch["image"], np.float32))
        counts.append(float(np.asarray(batch["count"]).reshape(-1)[0]))
    return np.concatenate(images), np.asarray(counts)


def initial_params(args) -> dict:
    """gcc_jax's random initialisation of the BL network (``seed``): what a run from scratch
    starts with (features Kaiming normal, biases 0, regression head N(0, 0.01))."""
    import jax

    from gcc_jax.runtime import create_model

    dummy = np.zeros((1, args.crop, args.crop, 3), np.float32)
    return create_model(_config(args, {}, 1.0)).init(jax.random.key(args.seed), dummy)["params"]


def _config(args, options: dict, rate: float):
    from gcc_jax.runtime import load_config_module, resolve_recipe

    config = load_config_module(ROOT / "configs" / "default.py").get_config()
    config.loss.name = "bl"
    config.loss.bl.update(options)
    config.model.width = args.width
    config.crop_size = args.crop
    config.batch_size = args.batch
    config.dataset.max_points = args.max_points
    config.optimizer.learning_rate = rate
    return resolve_recipe(config)


def run_torch(args, variant: str, rate: float, batches, validation) -> dict:
    import torch

    from benchmarks.official_trainers import OfficialTrainer, official_network

    network = official_network("bl", initial_params(args))
    trainer = OfficialTrainer("bl", network, crop_size=args.crop, learning_rate=rate)
    switches = dict(phases(variant, len(batches)))
    record = {"loss": [], "predicted": [], "true": []}
    start = time.process_time()
    for index, batch in enumerate(batches):
        if index in switches:
            trainer.loss_options = dict(switches[index])
        record["loss"].append(trainer.step(batch))
        with torch.no_grad():
            images = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
            record["predicted"].append(float(network(images).sum((1, 2)).mean()))
        record["true"].append(float(batch["point_mask"].sum(1).mean()))
    record["cpu_s"] = time.process_time() - start
    with torch.no_grad():
        images, counts = validation
        predicted = np.asarray(network(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).sum((1, 2)))
    return _summary(record, predicted, counts)


def run_jax(args, variant: str, rate: float, batches, validation) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.official_trainers import official_network
    from gcc_jax.models import params_from_torch
    from gcc_jax.runtime import create_mesh, create_model, global_batch
    from gcc_jax.training import TrainState, create_learning_rate_fn, create_optimizer, make_loss_fn, make_train_step
    from gcc_jax.training.steps import TRAIN_BATCH_KEYS

    config = _config(args, {}, rate)
    params = params_from_torch(official_network("bl", initial_params(args)).state_dict())["params"]
    model = create_model(config)
    mesh = create_mesh(jax.devices()[:1])
    schedule = create_learning_rate_fn(config.optimizer, steps_per_epoch=len(batches))
    state = TrainState.create(apply_fn=model.apply, params=params, tx=create_optimizer(config.optimizer, schedule))
    steps = {
        first: make_train_step(
            mesh, loss_fn=make_loss_fn(_config(args, options, rate).loss, crop_size=args.crop, mesh=mesh),
            learning_rate_fn=schedule,
        )
        for first, options in phases(variant, len(batches))
    }  # fmt: skip
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
    record["cpu_s"] = time.process_time() - start
    images, counts = validation
    predicted = np.concatenate([np.asarray(predict(state.params, jnp.asarray(images[i : i + 4]))) for i in range(0, len(images), 4)])
    return _summary(record, predicted, counts)


def _summary(record: dict, predicted: np.ndarray, counts: np.ndarray) -> dict:
    tail = max(len(record["predicted"]) // 10, 1)
    final_ratio = float(np.mean(record["predicted"][-tail:]) / max(np.mean(record["true"][-tail:]), 1e-9))
    return {
        **record,
        "final_count_ratio": final_ratio,  # mean predicted / true count over the last 10 % of steps
        "collapsed": final_ratio < COLLAPSED_BELOW,
        "val_mae": float(np.mean(np.abs(predicted - counts))),
        "val_mean_predicted": float(np.mean(predicted)),
        "val_mean_true": float(np.mean(counts)),
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


def markdown(rows, machine: str, command: str) -> str:
    lines = [
        "| variant | lr | implementation | final predicted / true count (train, last 10 %) | collapsed | val MAE | val mean predicted (true) | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['learning_rate']:g} | {r['implementation']} | {r['final_count_ratio']:.3f} | "
            f"{'yes' if r['collapsed'] else 'no'} | {r['val_mae']:.2f} | {r['val_mean_predicted']:.2f} "
            f"({r['val_mean_true']:.2f}) | {r['cpu_s']:.0f} |"
        )
    lines += ["", f"Machine: {machine}. Command: `{command}`"]
    return "\n".join(lines) + "\n"


def figure(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["variant"], r["learning_rate"]) for r in rows}, key=lambda k: (k[1], k[0]))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for r in rows:
            if (r["variant"], r["learning_rate"]) == key:
                style = "-" if r["implementation"] == "official (torch)" else "--"
                ax.plot(r["predicted"], style, label=r["implementation"])
                truth = r["true"]
        ax.plot(truth, ":", color="grey", label="true")
        ax.set_title(f"{key[0]}, lr {key[1]:g}", fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("mean count per crop")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    from PIL import Image

    # A 64-colour palette keeps the PNG small.
    Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]).quantize(64).save(path, optimize=True)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=lambda s: tuple(s.split(",")), default=("bg2021", "bg2019", "no_bg"))
    parser.add_argument("--rates", type=lambda s: tuple(float(v) for v in s.split(",")), default=(1e-4, 1e-5))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--width", type=float, default=1 / 8)
    parser.add_argument("--max_points", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="JSON path (a .md table and a .png figure beside it)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    info = describe_machine()
    machine = machine_label(info)
    command = ("python benchmarks/bl_random_start.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    print(machine, flush=True)
    batches = training_batches(args)
    validation = validation_images()
    rows = []
    for rate in args.rates:
        for variant in args.variants:
            for implementation, run in (("official (torch)", run_torch), ("gcc_jax", run_jax)):
                result = run(args, variant, rate, batches, validation)
                row = {"variant": variant, "learning_rate": rate, "implementation": implementation, **result}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    info["load_1min_end"] = round(os.getloadavg()[0], 2)
    table = markdown(rows, machine, command)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        with open(args.out, "w") as handle:
            json.dump(rounded({"machine": info, "command": command, "settings": settings, "rows": rows}), handle)
        base = os.path.splitext(args.out)[0]
        with open(base + ".md", "w") as handle:
            handle.write(table)
        figure(rows, base + ".png")


if __name__ == "__main__":
    main()
