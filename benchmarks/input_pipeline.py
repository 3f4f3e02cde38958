"""Input-pipeline measurements: TFDS build time and training-batch throughput of each backend.

    python benchmarks/input_pipeline.py --manual_dir tests/data/shanghaitech_sample \\
        [--crop 512 --batch 8 --train_images 300 --epochs 4 --cores 1,2 --loaders tf.data,grain] \\
        [--baseline_repo DIR] [--out benchmarks/results/input_pipeline.json]

1. Builds ShanghaiTech part A and part B from ``--manual_dir`` into a temporary data directory
   and reports the wall time of each build.
2. Training throughput on real JPEGs. The sample holds only a few images per split, so the
   train images are replicated ``--replicate`` times, or as often as it takes to give each part
   ``--train_images`` training images (default 300: ShanghaiTech A has 300, B 400, so an epoch
   weighs each pipeline's fixed start-up as a real one does), under new names (``IMG_<n>``
   copies of the real JPEGs and .mat files), built, and ``make_train_dataset`` is iterated for
   ``--epochs`` epochs at ``--crop`` / ``--batch`` with every loader of ``--loaders``. Every copy
   is its own record: decoding and caching treat it as a distinct image.
3. Each (loader, cores) measurement runs in a fresh process pinned to the first ``cores`` CPUs
   (``os.sched_setaffinity`` before TensorFlow or Grain start their thread pools) and reads
   the batches ``train.py`` reads: uint8 crops, normalised on the device (``--float32``: the
   normalised float32 batches of ``make_train_dataset``'s default). It reports
   wall images/s and images per CPU-second of that process (user + system time of all its
   threads, ``resource.getrusage``): the per-core figure that does not depend on what else
   runs on the machine. Epoch 0 (pipeline start-up and, with the decoded-image cache, the
   decoding of every image) is reported apart from the later epochs.
4. ``--baseline_repo DIR``: also measures the tf.data pipeline of another checkout (e.g.
   ``git archive COMMIT | tar -x -C DIR``) in the same run, for a fair ratio on a loaded machine
   (with that checkout's own defaults: before the Grain backend, float32 batches).

Results are printed, and written as JSON + Markdown with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, *, loader: str, epochs: int, uint8: bool, **kwargs) -> dict:
    """Iterates ``epochs`` epochs in this process; wall and CPU time of epoch 0 and of the rest."""
    from gcc_jax.data import make_train_dataset

    if loader != "baseline":  # the other checkout's pipeline knows neither option
        kwargs.update(loader=loader, normalize=not uint8)
    make_train_dataset(name, epoch=0, **kwargs)  # imports the backend (TensorFlow) before the clock starts
    results = []
    for epoch in range(epochs):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        images = sum(len(batch["image"]) for batch in make_train_dataset(name, epoch=epoch, **kwargs))
        results.append((images, time.perf_counter() - wall, _cpu_seconds() - cpu))
    later = [sum(column) for column in zip(*results[1:])] if epochs > 1 else [0, float("nan"), float("nan")]
    return {
        "first_epoch": {"images": results[0][0], "images_per_s": results[0][0] / results[0][1],
                        "images_per_cpu_s": results[0][0] / results[0][2]},
        "later_epochs": {"images": later[0], "images_per_s": later[0] / later[1], "images_per_cpu_s": later[0] / later[2]},
    }  # fmt: skip


def _child(args) -> None:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.child_cores]))
    kwargs = dict(crop_size=args.crop, batch_size=args.batch, max_points=4096, seed=0, data_dir=args.data_dir)
    if args.image_cache_mib is not None and args.child_loader != "baseline":
        kwargs["image_cache_bytes"] = args.image_cache_mib * 2**20
    print(json.dumps(measure(args.child_name, loader=args.child_loader, epochs=args.epochs, uint8=not args.float32,
                             **kwargs)))


def _run_child(args, *, name: str, loader: str, cores: int, data_dir: pathlib.Path) -> dict:
    repo = pathlib.Path(args.baseline_repo) if loader == "baseline" else ROOT
    env = dict(os.environ, PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    command = [sys.executable, __file__, "--child_name", name, "--child_loader", loader, "--child_cores", str(cores),
               "--data_dir", str(data_dir), "--crop", str(args.crop), "--batch", str(args.batch),
               "--epochs", str(args.epochs), "--manual_dir", "-"] + (["--float32"] if args.float32 else [])  # fmt: skip
    if args.image_cache_mib is not None:
        command += ["--image_cache_mib", str(args.image_cache_mib)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise RuntimeError(f"{loader} on {cores} core(s) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _markdown(report: dict) -> str:
    lines = [
        f"Training batches ({report['images']}; decoded-image cache: {report.get('image_cache', 'default')}), "
        f"crop {report['crop']}, batch {report['batch']}, ShanghaiTech "
        f"JPEGs (the sample replicated), {report['epochs']} epochs; machine: {report['machine']}; load "
        f"{report['load_1min_end']:.1f} at the end.",
        "",
        "| data set | loader | cores | epoch 0 images/s | epoch 0 images/CPU-s | later epochs images/s | later epochs images/CPU-s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["throughput"]:
        first, later = row["first_epoch"], row["later_epochs"]
        lines.append(
            f"| {row['dataset']} | {row['loader']} | {row['cores']} | {first['images_per_s']:.0f} | "
            f"{first['images_per_cpu_s']:.0f} | {later['images_per_s']:.0f} | {later['images_per_cpu_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", required=True, help="ShanghaiTech raw layout (part_A/, part_B/)")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--replicate", type=int, default=32, help="copies of each train image for throughput")
    parser.add_argument("--train_images", type=int, default=300,
                        help="at least this many training images per part (copies of the sample's)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cores", default="1,2", help="CPU counts to pin each measurement to")
    parser.add_argument("--loaders", default="tf.data,grain")
    parser.add_argument("--baseline_repo", default=None, help="also measure this checkout's tf.data pipeline")
    parser.add_argument("--float32", action="store_true", help="normalised float32 batches instead of uint8")
    parser.add_argument(
        "--image_cache_mib", type=int, default=None,
        help="decoded-image cache of the pipelines (default: theirs); 0 decodes every image every epoch, "
        "as on data sets larger than the cache (UCF-QNRF, NWPU-Crowd, JHU-Crowd++)",
    )
    parser.add_argument("--out", default=None, help="write JSON here and Markdown beside it")
    parser.add_argument("--data_dir", help=argparse.SUPPRESS)
    parser.add_argument("--child_name", help=argparse.SUPPRESS)
    parser.add_argument("--child_loader", help=argparse.SUPPRESS)
    parser.add_argument("--child_cores", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_name:
        return _child(args)

    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import describe_machine, machine_label
    from gcc_jax.data import build_dataset

    report = {"crop": args.crop, "batch": args.batch, "epochs": args.epochs, "machine": machine_label(),
              "command": " ".join(sys.argv),
              "images": "float32, normalised" if args.float32 else "uint8, normalised on the device",
              "image_cache": "the pipelines' default" if args.image_cache_mib is None else f"{args.image_cache_mib} MiB",
              "machine_info": describe_machine(), "builds": {}, "throughput": []}  # fmt: skip
    loaders = args.loaders.split(",") + (["baseline"] if args.baseline_repo else [])
    if args.baseline_repo:
        report["baseline"] = f"the tf.data pipeline of {args.baseline_repo} (its own defaults)"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name in ("shanghaitech/part_a", "shanghaitech/part_b"):
            start = time.perf_counter()
            builder = build_dataset(name, manual_dir=args.manual_dir, data_dir=tmp / "sample")
            report["builds"][name] = time.perf_counter() - start
            splits = {s: i.num_examples for s, i in builder.info.splits.items()}
            print(f"build {name} from {args.manual_dir}: {report['builds'][name]:.2f} s {splits}", flush=True)
        replicate_layout(pathlib.Path(args.manual_dir), tmp / "replicated", args.replicate,
                         min_train_images=max(4 * args.batch, args.train_images))  # fmt: skip
        for name in ("shanghaitech/part_a", "shanghaitech/part_b"):
            builder = build_dataset(name, manual_dir=tmp / "replicated", data_dir=tmp / "replicated_tfds")
            print(f"{name}: {builder.info.splits['train'].num_examples} train images (replicated)", flush=True)
            for cores in map(int, args.cores.split(",")):
                for loader in loaders:
                    row = _run_child(args, name=name, loader=loader, cores=cores, data_dir=tmp / "replicated_tfds")
                    report["throughput"].append({"dataset": name, "loader": loader, "cores": cores, **row})
                    first, later = row["first_epoch"], row["later_epochs"]
                    print(f"  {loader:8s} {cores} core(s): epoch 0 {first['images_per_s']:6.1f} images/s "
                          f"{first['images_per_cpu_s']:6.1f}/CPU-s | later {later['images_per_s']:6.1f} images/s "
                          f"{later['images_per_cpu_s']:6.1f}/CPU-s ({later['images']} images)", flush=True)  # fmt: skip
    report["load_1min_end"] = os.getloadavg()[0]
    if args.out:
        out = pathlib.Path(args.out)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(_markdown(report))


if __name__ == "__main__":
    main()
