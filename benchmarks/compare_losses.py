"""The loss comparison study: the same network trained with L2, BL, DM-Count and GL on the same data.

    python benchmarks/compare_losses.py --workdir runs/compare_losses --out benchmarks/results

For each loss, ``configs/synthetic.py`` (narrow VGG19, width 1/8, from scratch; synthetic
crowds, crop 128, batch 8, Adam lr 1e-3 with cosine decay, 10 epochs = 400 steps, seed 0) is
trained with :func:`gcc_jax.training.train_and_evaluate` into ``WORKDIR/<loss>`` — the same
steps, seeds, data order, augmentation and schedule for every loss; only ``config.loss.name``
(and with it the network head each loss's official code uses, see
:func:`gcc_jax.models.official_head`) changes. BL runs twice: as the official code trains it
(BL+, with the background row) and without the background row — from a random
initialisation, BL+ collapses to an all-zero map here (the background owns most cells, so its
first gradients lower the density everywhere and the ReLUs of the narrow network die; seen at
learning rates 1e-3 and 1e-4, with the 2021 and the 2019 background), and the second run
shows what BL's head terms learn on their own. A finished run is not retrained (the workdir
resumes; delete it to start over). Then, with each run's final parameters:

* counting: MAE / RMSE on the validation and the test split;
* localization (the GL authors' recipe, :mod:`gcc_jax.localization`): the peak threshold is
  chosen on the validation split with :func:`gcc_jax.localization.choose_threshold` (F1 at a
  fixed matching radius, ``--radius`` px, default 8: the synthetic heads have radii 2.5–8 px),
  then precision / recall / F1 on the test split at that threshold (TP/FP/FN summed over the
  split; maximum-cardinality matching, :func:`gcc_jax.metrics.match_points`); GL's detections
  are moved by half a cell (+4 px), because GL's reference geometry places cell ``j`` at
  ``(j + 1)·s`` rather than at its centre (see :func:`cell_shift`);
* sparsity: the fraction of the test maps' cells with density below 0.001 (the GL
  supplement's measure), beside the same fraction of the ground-truth dot maps;
* figures: test density maps side by side (like the GL supplement's Fig. 5) and detections
  (like its Fig. 8), each stamped with the machine it was made on.

Writes ``OUT/compare_losses.json``, ``OUT/compare_losses.md`` (the table) and
``OUT/compare_losses_density.png``, ``OUT/compare_losses_detections.png``.

L2 uses a fixed Gaussian of ``--l2_sigma`` px (default 4, about a synthetic head's radius;
the config default of 15 px is the ShanghaiTech B habit for heads several times larger).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Study entries: (config.loss.name, overrides of that loss's config block).
VARIANTS = {
    "l2": ("l2", {}),
    "bl": ("bl", {}),  # BL+ of the official code: with the background row (2021 form, ratio 1)
    "bl_no_background": ("bl", {"use_background": False}),
    "dm_count": ("dm_count", {}),
    "gl": ("gl", {}),
}
LOSSES = tuple(VARIANTS)
LABELS = {"l2": "L2", "bl": "BL+ (background)", "bl_no_background": "BL (no background)", "dm_count": "DM-Count", "gl": "GL"}
SPARSE_BELOW = 1e-3  # the supplement's sparsity threshold (density per cell)
THRESHOLDS = tuple(np.round(np.arange(0.01, 0.61, 0.01), 2))  # localization candidates


def study_config(variant: str, *, epochs: int, l2_sigma: float, seed: int):
    """``configs/synthetic.py`` with the study's overrides for one entry of :data:`VARIANTS`."""
    from gcc_jax.runtime import load_config_module

    root = pathlib.Path(__file__).resolve().parents[1]
    config = load_config_module(root / "configs" / "synthetic.py").get_config()
    loss, overrides = VARIANTS[variant]
    config.loss.name = loss
    config.loss[loss].update(overrides)
    config.loss.l2.sigma = l2_sigma
    config.num_epochs = epochs
    # One optimiser for every loss (the study compares losses): GL's weight decay, which the
    # recorded results used, rather than each loss's own training recipe.
    config.optimizer.weight_decay = 1e-5
    config.seed = seed
    config.progress_bar = False
    return config


def train(config, workdir: pathlib.Path) -> float:
    """Trains (resuming an interrupted run) and returns the wall time of this call, evaluations included."""
    from gcc_jax.training import train_and_evaluate

    start = time.perf_counter()
    train_and_evaluate(config, workdir)
    return time.perf_counter() - start


def predictions(config, workdir: pathlib.Path, split: str) -> list[dict]:
    """Per-image records (density, points, image, ...) of the run's final parameters on ``split``."""
    import jax

    from gcc_jax.runtime import (
        create_model,
        iterate_predictions,
        local_eval_mesh,
        make_eval_batches,
        make_predict_fn,
        replicated_sharding,
        restore_params,
    )

    model = create_model(config)
    mesh = local_eval_mesh(config.eval_batch_size)
    dummy = jax.numpy.zeros((1, config.crop_size, config.crop_size, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]
    sharding = replicated_sharding(mesh)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
    params, _ = restore_params(workdir, abstract, which="latest")
    batches = make_eval_batches(config, split)
    return list(iterate_predictions(make_predict_fn(model.apply, mesh), {"params": params}, batches, mesh))


def cell_shift(config) -> float:
    """Pixels to add to detections so they land where the loss put each cell's mass.

    BL, DM-Count and L2 place cell ``j`` at its centre ``(j + ½)·s``; GL's reference geometry
    (``cell_offset="reference"``, the default) at ``(j + 1)·s``, so a GL model learns to put a
    head's mass half a cell up and left of it, and its detections are shifted back by ``s/2``
    (4 px), as the model was trained to mean them.
    """
    from gcc_jax.losses import cell_positions
    from gcc_jax.models import STRIDE

    if config.loss.name != "gl":
        return 0.0
    first_cell_x = float(cell_positions(1, 1, stride=STRIDE, offset=config.loss.gl.cell_offset)[0, 0])
    return first_cell_x - STRIDE / 2


def counting(records) -> dict:
    from gcc_jax.metrics import CountingAccumulator

    accumulator = CountingAccumulator()
    for r in records:
        accumulator.add(float(r["density"].sum()), len(r["points"]))
    result = accumulator.result()
    return {"mae": result["mae"], "rmse": result["rmse"]}


def localization(val_records, test_records, *, radius: float, pixel_offset: float) -> dict:
    """Threshold chosen on validation (max F1), then P/R/F1 on test; also the detections."""
    from gcc_jax.localization import choose_threshold, density_to_point_list
    from gcc_jax.metrics import LocalizationAccumulator

    choice = choose_threshold(
        [r["density"] for r in val_records], [r["points"] for r in val_records], radius,
        candidates=THRESHOLDS, pixel_offset=pixel_offset,
    )  # fmt: skip
    detections = density_to_point_list(
        [r["density"] for r in test_records], threshold=choice.threshold, pixel_offset=pixel_offset
    )
    accumulator = LocalizationAccumulator()
    matches = [accumulator.add(found, r["points"], radius) for found, r in zip(detections, test_records)]
    result = dict(accumulator.result())
    result.update(threshold=choice.threshold, val_f1=choice.f1)
    return result, detections, matches


def sparsity(maps) -> float:
    """Fraction of all cells of ``maps`` below :data:`SPARSE_BELOW`."""
    cells = np.concatenate([np.ravel(m) for m in maps])
    return float(np.mean(cells < SPARSE_BELOW))


def ground_truth_sparsity(records) -> float:
    """The same fraction for the ground-truth dot maps (heads per cell): the sparsest possible map."""
    from gcc_jax.losses import dot_map

    maps = []
    for r in records:
        h, w = r["density"].shape
        points = np.asarray(r["points"], np.float32).reshape(1, -1, 2)
        maps.append(np.asarray(dot_map(points, np.ones(points.shape[:2], bool), height=h, width=w)))
    return sparsity(maps)


def pick_examples(records, count: int) -> list[int]:
    """Test images spread over the count range (quantiles of the non-empty images' counts)."""
    order = [i for i in np.argsort([len(r["points"]) for r in records], kind="stable") if len(records[i]["points"])]
    picks = [order[int(round(q * (len(order) - 1)))] for q in np.linspace(0.3, 1.0, count)]
    return list(dict.fromkeys(picks))


def _image(record):
    from gcc_jax.imagenet import denormalize_images

    return np.clip(np.asarray(denormalize_images(record["image"])), 0, 255).astype(np.uint8)


def density_figure(per_loss, picks, path, *, machine: str) -> None:
    """Rows: test images; columns: the image with its heads, then each loss's density map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = list(per_loss)
    first = per_loss[losses[0]]["test"]
    fig, axes = plt.subplots(len(picks), len(losses) + 1, figsize=(2.3 * (len(losses) + 1), 2.75 * len(picks) + 0.6), squeeze=False)
    for row, index in enumerate(picks):
        record = first[index]
        ax = axes[row, 0]
        ax.imshow(_image(record))
        pts = record["points"]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c="red", linewidths=0)
        ax.set_title(f"image, {len(pts)} heads", fontsize=8)
        for col, loss in enumerate(losses, start=1):
            density = per_loss[loss]["test"][index]["density"]
            ax = axes[row, col]
            ax.imshow(density, cmap="magma", vmin=0, vmax=max(float(density.max()), 1e-6), interpolation="nearest")
            sparse = np.mean(density < SPARSE_BELOW)
            ax.set_title(f"{LABELS[loss]}: {density.sum():.1f}, max {density.max():.2f}\n{100 * sparse:.0f}% cells < 1e-3", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Density maps on synthetic test images (colour scale per map)\n{machine}", fontsize=8)
    save_small_png(fig, path)


def detections_figure(per_loss, picks, path, *, radius: float, machine: str) -> None:
    """Rows: test images; columns: each loss's detections (TP green, FP red, missed heads yellow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = list(per_loss)
    fig, axes = plt.subplots(len(picks), len(losses), figsize=(3.2 * len(losses), 3.4 * len(picks) + 0.6), squeeze=False)
    for row, index in enumerate(picks):
        for col, loss in enumerate(losses):
            record = per_loss[loss]["test"][index]
            found = per_loss[loss]["detections"][index]
            match = per_loss[loss]["matches"][index]
            ax = axes[row, col]
            ax.imshow(_image(record))
            hit = match.pred_to_gt >= 0
            missed = np.setdiff1d(np.arange(len(record["points"])), match.pred_to_gt[hit])
            ax.scatter(*record["points"][missed].T, s=30, facecolors="none", edgecolors="yellow", linewidths=1.0)
            ax.scatter(*found[hit].T, s=30, c="lime", marker="+", linewidths=1.2)
            ax.scatter(*found[~hit].T, s=24, c="red", marker="x", linewidths=1.2)
            ax.set_title(f"{LABELS[loss]}: TP {match.tp} FP {match.fp} FN {match.fn}", fontsize=8)
            height, width = record["image_hw"]
            ax.set_xlim(-0.5, width - 0.5)  # markers never widen the view beyond the image
            ax.set_ylim(height - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Detections on synthetic test images (radius {radius:g} px; + TP, x FP, o missed head)\n{machine}", fontsize=8
    )
    save_small_png(fig, path)


def save_small_png(fig, path, *, dpi: int = 72) -> None:
    """Saves a figure as a 256-colour PNG (a few hundred kB instead of MBs for photos + markers)."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)


def markdown_table(rows: dict, *, gt_sparsity: float, radius: float, machine: str, command: str) -> str:
    lines = [
        "| loss | val MAE | val RMSE | test MAE | test RMSE | threshold | precision | recall | F1 | cells < 1e-3 | train + eval time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for loss, r in rows.items():
        lines.append(
            f"| {LABELS[loss]} | {r['val']['mae']:.2f} | {r['val']['rmse']:.2f} | {r['test']['mae']:.2f} | "
            f"{r['test']['rmse']:.2f} | {r['localization']['threshold']:.2f} | {r['localization']['precision']:.3f} | "
            f"{r['localization']['recall']:.3f} | {r['localization']['f1']:.3f} | {100 * r['sparsity']:.1f}% | "
            f"{r['train_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        f"Localization on the test split at a {radius:g} px radius, threshold chosen on validation "
        "(GL's detections moved by +4 px, its reference cell positions); "
        f"ground-truth dot maps have {100 * gt_sparsity:.1f}% empty cells. Machine: {machine}. "
        f"Command: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/compare_losses", help="one run directory per loss under it")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the table, JSON and figures")
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (40 steps each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l2_sigma", type=float, default=4.0, help="Gaussian std of L2's ground truth, px")
    parser.add_argument("--radius", type=float, default=8.0, help="localization matching radius, px")
    parser.add_argument("--pixel_offset", type=float, default=0.5,
                        help="added to detected pixel indices (0.5 = pixel centres, the annotations' convention)")
    parser.add_argument("--figure_images", type=int, default=3)
    args = parser.parse_args(argv)

    from benchmarks.machine import describe_machine, machine_label

    info = describe_machine()
    machine = machine_label(info)
    print(machine, flush=True)
    workdir, out = pathlib.Path(args.workdir), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    losses = args.losses.split(",")
    unknown = set(losses) - set(LOSSES)
    if unknown:
        raise ValueError(f"--losses: unknown {sorted(unknown)}; choose from {LOSSES}")

    per_loss, rows = {}, {}
    for loss in losses:
        config = study_config(loss, epochs=args.epochs, l2_sigma=args.l2_sigma, seed=args.seed)
        print(f"== {loss}: training into {workdir / loss}", flush=True)
        settings = {"epochs": args.epochs, "seed": args.seed, "l2_sigma": args.l2_sigma}
        done_file = workdir / loss / "study_run.json"  # written once the run has finished
        if done_file.exists():
            done = json.loads(done_file.read_text())
            if done["settings"] != settings:
                raise ValueError(f"{workdir / loss} holds a finished run with {done['settings']}, not {settings}; "
                                 "delete it or choose another --workdir")
            seconds = done["seconds"]
            print(f"   finished run found ({seconds / 60:.1f} min); not retrained", flush=True)
        else:
            seconds = train(config, workdir / loss)
            done_file.write_text(json.dumps({"settings": settings, "seconds": seconds}))
        val, test = predictions(config, workdir / loss, "val"), predictions(config, workdir / loss, "test")
        offset = args.pixel_offset + cell_shift(config)
        loc, detections, matches = localization(val, test, radius=args.radius, pixel_offset=offset)
        loc["pixel_offset"] = offset
        rows[loss] = {
            "val": counting(val),
            "test": counting(test),
            "localization": loc,
            "sparsity": sparsity([r["density"] for r in test]),
            "train_seconds": seconds,
        }
        per_loss[loss] = {"test": test, "detections": detections, "matches": matches}
        print(f"   {json.dumps(rows[loss])}", flush=True)

    first_test = per_loss[losses[0]]["test"]
    gt_sparsity = ground_truth_sparsity(first_test)
    command = "python benchmarks/compare_losses.py " + " ".join(argv if argv is not None else sys.argv[1:])
    picks = pick_examples(first_test, args.figure_images)
    density_figure(per_loss, picks, out / "compare_losses_density.png", machine=machine)
    detections_figure(per_loss, picks[-2:], out / "compare_losses_detections.png", radius=args.radius, machine=machine)
    table = markdown_table(rows, gt_sparsity=gt_sparsity, radius=args.radius, machine=machine, command=command.strip())
    (out / "compare_losses.md").write_text(table)
    result = {
        "machine": info,
        "command": command.strip(),
        "settings": vars(args),
        "ground_truth_sparsity": gt_sparsity,
        "losses": rows,
    }
    (out / "compare_losses.json").write_text(json.dumps(result, indent=2))
    print(table)


if __name__ == "__main__":
    main()
