"""Input-pipeline measurements: TFDS build time and training-batch throughput.

    python benchmarks/input_pipeline.py --manual_dir tests/data/shanghaitech_sample \
        [--crop 512 --batch 8 --replicate 8 --epochs 3] [--synthetic]

1. Builds ShanghaiTech part A and part B from ``--manual_dir`` into a fresh temporary data
   directory and reports the wall time of each build.
2. Training throughput on real images: the sample holds only a few images per split, fewer
   than a batch, so the train images are replicated ``--replicate`` times (more where a part
   would still give fewer than 4 batches per epoch) under new names
   (``IMG_<n>`` copies of the real JPEGs and .mat files) into a temporary raw layout, built,
   and ``make_train_dataset`` is iterated for ``--epochs`` epochs at ``--crop`` / ``--batch``.
   Every batch decodes, crops, flips and normalises real JPEGs; the first batch of each epoch
   (pipeline start-up) is reported separately.
3. With ``--synthetic``: the same on ``synthetic_crowd`` (default options, 256 x 256 images).

Numbers depend on the machine's free cores; the report prints ``os.cpu_count()``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import tempfile
import time

from gcc_jax.data import build_dataset, make_train_dataset


def replicate_layout(source: pathlib.Path, target: pathlib.Path, copies: int, *, min_train_images: int) -> None:
    """Copies ``part_*/train_data`` with every annotated image repeated ``copies`` times, or as
    often as it takes to reach ``min_train_images`` training images in the part."""
    for part in ("part_A", "part_B"):
        for split in ("train_data", "test_data"):
            src = source / part / split
            if not src.is_dir():
                continue
            gt_name = "ground-truth" if (src / "ground-truth").is_dir() else "ground_truth"
            (target / part / split / "images").mkdir(parents=True)
            (target / part / split / "ground-truth").mkdir(parents=True)
            stems = sorted(re.match(r"GT_(IMG_\d+)\.mat", p.name).group(1) for p in (src / gt_name).glob("GT_IMG_*.mat"))
            number = 0
            repeats = max(copies, -(-min_train_images // max(len(stems), 1))) if split == "train_data" else 1
            for copy in range(repeats):
                for stem in stems:
                    number += 1
                    shutil.copy(src / "images" / f"{stem}.jpg", target / part / split / "images" / f"IMG_{number}.jpg")
                    shutil.copy(src / gt_name / f"GT_{stem}.mat", target / part / split / "ground-truth" / f"GT_IMG_{number}.mat")


def throughput(name: str, *, epochs: int, **kwargs) -> None:
    total_batches, total_time, first_times = 0, 0.0, []
    for epoch in range(epochs):
        iterator = iter(make_train_dataset(name, epoch=epoch, **kwargs))
        start = time.perf_counter()
        next(iterator)
        first_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        count = sum(1 for _ in iterator)
        total_time += time.perf_counter() - start
        total_batches += count
    rate = total_batches / total_time if total_time else float("nan")
    print(
        f"{name}: {rate:.2f} batches/s ({rate * kwargs['batch_size']:.1f} images/s) over {total_batches} batches "
        f"after the first of each epoch; first batch {min(first_times):.2f}-{max(first_times):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", required=True, help="ShanghaiTech raw layout (part_A/, part_B/)")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--replicate", type=int, default=8, help="copies of each train image for throughput")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="also measure synthetic_crowd")
    args = parser.parse_args()
    print(f"cpu_count={os.cpu_count()} crop={args.crop} batch={args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name in ("shanghaitech/part_a", "shanghaitech/part_b"):
            start = time.perf_counter()
            builder = build_dataset(name, manual_dir=args.manual_dir, data_dir=tmp / "sample")
            splits = {s: i.num_examples for s, i in builder.info.splits.items()}
            print(f"build {name} from {args.manual_dir}: {time.perf_counter() - start:.2f} s {splits}")
        replicate_layout(pathlib.Path(args.manual_dir), tmp / "replicated", args.replicate,
                         min_train_images=4 * args.batch)
        common = dict(crop_size=args.crop, batch_size=args.batch, max_points=4096, seed=0, epochs=args.epochs)
        for name in ("shanghaitech/part_a", "shanghaitech/part_b"):
            start = time.perf_counter()
            builder = build_dataset(name, manual_dir=tmp / "replicated", data_dir=tmp / "replicated_tfds")
            print(f"build {name} (replicated): {time.perf_counter() - start:.2f} s, "
                  f"{builder.info.splits['train'].num_examples} train images")
            throughput(name, data_dir=tmp / "replicated_tfds", **common)
    if args.synthetic:
        throughput("synthetic_crowd", synthetic=None, **dict(common, crop_size=min(args.crop, 256)))


if __name__ == "__main__":
    main()
