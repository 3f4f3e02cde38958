"""Evaluation throughput on full images of mixed sizes, and how many compilations it costs.

    python benchmarks/eval_speed.py --out benchmarks/results/eval_speed.json
    python benchmarks/eval_speed.py --width 1 --num_images 8        # the full VGG19 (slow on a CPU)

``--num_images`` random images (normalised scale) whose heights and widths are drawn
uniformly from the integers in ``[--min_side, --max_side]`` (default 384–1024, the range of
ShanghaiTech A) are run through the evaluation path of the program — the jitted prediction
step :func:`gcc_jax.runtime.make_predict_fn` of a randomly initialised ``VGG19Density`` —
twice: a cold pass (every new input shape compiles) and a warm pass (all compiled). Each
image is padded at the bottom and right with zeros (the ImageNet mean colour after
normalisation, as :func:`gcc_jax.data.make_eval_dataset` pads) up to a multiple of
``--pad_multiples``: 1 means exact sizes (the network pads to 16 internally, and every
distinct size is a new program), 16 is the program's default (``config.dataset.eval_pad_multiple``),
larger multiples bucket the sizes into fewer shapes at the price of computing on more padding.
With ``--batch > 1`` the images are sorted by padded size and batched, each batch padded to
its largest image, as the evaluation pipeline does.

Reported per multiple: compilations (jit cache entries after the pass), cold and warm pass
wall time, images/s, and the padded pixels computed per real pixel.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe_machine, machine_label  # noqa: E402


def image_sizes(num: int, *, low: int, high: int, seed: int) -> list[tuple[int, int]]:
    """``num`` (height, width) pairs, each side uniform in ``[low, high]``."""
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.integers(low, high + 1, size=2)) for _ in range(num)]


def batches_for(sizes, *, multiple: int, batch: int):
    """Index groups and their padded ``(H, W)``: sorted by padded size, as the eval pipeline batches."""
    padded = [(-(-h // multiple) * multiple, -(-w // multiple) * multiple) for h, w in sizes]
    order = sorted(range(len(sizes)), key=lambda i: (padded[i][0], padded[i][1], i)) if batch > 1 else list(range(len(sizes)))
    groups = [order[i : i + batch] for i in range(0, len(order), batch)]
    return [(g, (max(padded[i][0] for i in g), max(padded[i][1] for i in g))) for g in groups]


def run_pass(predict, variables, images, groups) -> float:
    import jax

    start = time.perf_counter()
    for indices, (height, width) in groups:
        batch = np.zeros((len(indices), height, width, 3), np.float32)
        for slot, i in enumerate(indices):
            h, w = images[i].shape[:2]
            batch[slot, :h, :w] = images[i]
        jax.block_until_ready(predict(variables, batch))
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=24)
    parser.add_argument("--min_side", type=int, default=384)
    parser.add_argument("--max_side", type=int, default=1024)
    parser.add_argument("--pad_multiples", type=lambda s: tuple(int(v) for v in s.split(",")), default=(1, 16, 64, 128, 256))
    parser.add_argument("--batch", type=int, default=1, help="images per prediction call (the references use 1)")
    parser.add_argument("--width", type=float, default=0.125, help="VGG19Density width (1 = the published network)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the rows as JSON here (and a .md table beside it)")
    args = parser.parse_args(argv)

    import jax

    from gcc_jax.models import VGG19Density
    from gcc_jax.runtime import local_eval_mesh, make_predict_fn

    info = describe_machine()
    machine = machine_label(info)
    command = ("python benchmarks/eval_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    print(machine, flush=True)
    sizes = image_sizes(args.num_images, low=args.min_side, high=args.max_side, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    images = [rng.standard_normal((h, w, 3)).astype(np.float32) for h, w in sizes]
    real_pixels = sum(h * w for h, w in sizes)
    model = VGG19Density(width=args.width)
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    mesh = local_eval_mesh(args.batch)
    # One-time start-up costs (backend, thread pools, first compilation) go to a throw-away
    # shape, so that the first setting measured does not pay them alone.
    run_pass(make_predict_fn(model.apply, mesh), variables, [np.zeros((48, 48, 3), np.float32)], [([0], (48, 48))])
    rows = []
    for multiple in args.pad_multiples:
        groups = batches_for(sizes, multiple=multiple, batch=args.batch)
        predict = make_predict_fn(model.apply, mesh)  # a fresh jit: its cache counts this setting's compilations
        cold = run_pass(predict, variables, images, groups)
        warm = run_pass(predict, variables, images, groups)
        computed = sum(len(g) * h * w for g, (h, w) in groups)
        row = {
            "pad_multiple": multiple,
            "compilations": int(predict._cache_size()),
            "distinct_shapes": len({shape for _, shape in groups}),
            "cold_s": cold,
            "warm_s": warm,
            "cold_images_per_s": args.num_images / cold,
            "warm_images_per_s": args.num_images / warm,
            "computed_over_real_pixels": computed / real_pixels,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    info["load_1min_end"] = round(os.getloadavg()[0], 2)
    lines = [
        "| pad to multiple of | compilations | cold pass s (img/s) | warm pass s (img/s) | pixels computed / real |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        label = "1 (exact sizes)" if r["pad_multiple"] == 1 else str(r["pad_multiple"])
        lines.append(
            f"| {label} | {r['compilations']} | {r['cold_s']:.1f} ({r['cold_images_per_s']:.2f}) | "
            f"{r['warm_s']:.1f} ({r['warm_images_per_s']:.2f}) | {r['computed_over_real_pixels']:.2f} |"
        )
    width = "1/8" if abs(args.width - 0.125) < 1e-9 else f"{args.width:g}"
    lines += ["", f"{args.num_images} images, sides {args.min_side}–{args.max_side} px, batch {args.batch}, "
              f"VGG19Density width {width}. Machine: {machine}. Command: `{command}`"]  # fmt: skip
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump({"machine": info, "command": command, "settings": vars(args), "rows": rows}, handle, indent=2)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as handle:
            handle.write(table)


if __name__ == "__main__":
    main()
