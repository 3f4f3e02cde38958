"""One-command accelerator check: the losses, the train step and a whole ``train.py`` run.

    python benchmarks/accelerator_check.py --out results/h200          # < 8 min on one H100 / H200
    python benchmarks/accelerator_check.py --out /tmp/check --quick    # tiny sizes, any CPU

Made for a machine with JAX (CUDA), flax, optax, orbax and PyTorch but no TensorFlow (see
``benchmarks/README.md`` for the wheels to bring). It writes ``accelerator_check.json`` and
``accelerator_check.md`` into ``--out`` after every part, so a run that stops early still
leaves what it measured. Parts, each with its own time budget (a part that would not fit the
time left is skipped, saying so):

1. ``environment``: devices, library versions, and which optional packages are missing (with
   the ``pip`` line that adds them).
2. ``matmul_peak``: the best float32 and bfloat16 matmul throughput measured on the device,
   the denominator of the MFU figures.
3. ``losses``: value + gradient of GL, BL, DM-Count and L2 (B = 8, 64 × 64 density maps,
   M = 512 and 2048 padded heads; ``benchmarks/losses_table.py``'s batches), jitted, beside the
   official per-image torch computations run on the same device when torch (and geomloss for
   GL) are installed, with the relative differences of loss and gradient.
4. ``train_step``: the program's jitted train step (full VGG19, crop 512, batch 8, GL) in
   float32 and bfloat16: images/s, the loss's share of the step, and MFU (3 × the forward
   FLOPs of :func:`gcc_jax.models.forward_flops` per image, over the measured peak).
5. ``torch_step``: a PyTorch step of the same network with the official GL loss
   (``benchmarks/train_step_speed.py``'s ``TorchStep``) on the same device.
6. ``end_to_end``: ``train.py`` itself, as a user runs it: synthetic crowds, the Grain loader,
   full VGG19, batch 8, crop 512, a fixed number of steps; its images/s (from the logged
   ``steps_per_second`` after the first epoch, which compiles and generates the images) beside the
   float32 step-only figure of part 4. The goal is end-to-end ≥ 90 % of step-only.

``--quick`` shrinks every part (narrow model, crop 64, batch 2, one small head count, float32
only, few steps) so the whole check runs on a CPU in a couple of minutes; ``tests/benchmarks/test_accelerator_check.py``
runs it that way.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Import name -> pip name of what the check (and gcc_jax) needs beyond JAX.
_NEEDED = {"flax": "flax", "optax": "optax", "orbax.checkpoint": "orbax-checkpoint", "ott": "ott-jax",
           "ml_collections": "ml-collections", "grain": "grain", "tensorflow_datasets": "tensorflow-datasets",
           "scipy": "scipy", "PIL": "pillow", "matplotlib": "matplotlib", "tensorboardX": "tensorboardX",
           "tqdm": "tqdm"}  # fmt: skip
_OPTIONAL = {"torch": "torch", "geomloss": "geomloss"}

FULL = dict(loss_batch=8, loss_size=64, loss_points=(512, 2048), width=1.0, crop=512, batch=8, heads=1024,
            dtypes=("float32", "bfloat16"),
            step_repeats=20, torch_repeats=10, e2e_image=576, e2e_train=320, e2e_steps=200, e2e_log=20)
# Quick: one head count and float32 only (compiling is most of a CPU run's time).
QUICK = dict(loss_batch=2, loss_size=16, loss_points=(16,), width=1 / 16, crop=64, batch=2, heads=32,
             dtypes=("float32",),
             step_repeats=3, torch_repeats=2, e2e_image=96, e2e_train=8, e2e_steps=8, e2e_log=2)
# Seconds each part may take at most (full sizes; --budget_s scales them).
BUDGETS = {"environment": 30, "matmul_peak": 30, "losses": 90, "train_step": 120, "torch_step": 60,
           "end_to_end": 150}  # fmt: skip


class Report:
    """The results so far, written to JSON + Markdown after every part."""

    def __init__(self, out: pathlib.Path, settings: dict):
        self.out = out
        self.data = {"settings": settings, "parts": {}}
        out.mkdir(parents=True, exist_ok=True)

    def record(self, part: str, result: dict) -> None:
        self.data["parts"][part] = result
        (self.out / "accelerator_check.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        (self.out / "accelerator_check.md").write_text(markdown(self.data))


def _median_time(fn, repeats: int, deadline: float) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return float(np.median(times))


def environment() -> dict:
    import jax

    versions, missing = {"python": platform.python_version()}, []
    for module, package in {**_NEEDED, **_OPTIONAL, "jaxlib": "jaxlib"}.items():
        try:
            versions[package] = getattr(importlib.import_module(module), "__version__", "installed")
        except ImportError:
            versions[package] = None
            missing.append(package)
    try:
        importlib.import_module("tensorflow")
        versions["tensorflow"] = "installed (not needed)"
    except ImportError:
        versions["tensorflow"] = None
    versions["jax"] = jax.__version__
    devices = jax.devices()
    result = {"platform": devices[0].platform, "devices": [d.device_kind for d in devices], "versions": versions,
              "missing": missing}  # fmt: skip
    if missing:
        result["install"] = "pip install " + " ".join(missing)
    return result


def matmul_peak(settings: dict, deadline: float) -> dict:
    import jax
    import jax.numpy as jnp

    size = 8192 if settings["width"] == 1.0 else 512
    result = {"size": size}
    for dtype in ("float32", "bfloat16"):
        a = jnp.ones((size, size), dtype)
        matmul = jax.jit(lambda x, y: x @ y)
        jax.block_until_ready(matmul(a, a))
        seconds = _median_time(lambda: jax.block_until_ready(matmul(a, a)), 10, deadline)
        result[f"{dtype}_tflops"] = 2 * size**3 / seconds / 1e12
    return result


class _TorchOnDevice:
    """Runs torch code on the accelerator when there is one: the official computations build
    their tensors with torch's default device."""

    def __enter__(self):
        try:
            import torch
        except ImportError:
            self.torch = None
            return "cpu"
        self.torch = torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.set_default_device(device)
        return device

    def __exit__(self, *exc):
        if self.torch is not None:
            self.torch.set_default_device("cpu")


def losses(settings: dict, deadline: float) -> dict:
    import jax

    from benchmarks.loss_speed import make_batch
    from benchmarks.losses_table import LOSSES, draw_counts, jax_value_and_grad, official_value_and_grad

    rows = []
    batch, size, crop = settings["loss_batch"], settings["loss_size"], settings["loss_size"] * 8
    for max_points in settings["loss_points"]:
        counts = draw_counts(batch, max_points, 0)
        density, point_list, points, mask = make_batch(counts, size=size, crop=crop, pad_to=max_points, seed=0)
        st_size = np.random.default_rng(0).uniform(crop, 3 * crop, batch).astype(np.float32)
        for name in LOSSES:
            if time.perf_counter() > deadline:
                rows.append({"loss": name, "padded_points": max_points, "skipped": "time budget"})
                continue
            fn = jax_value_and_grad(name, crop=crop)
            loss, grad = jax.block_until_ready(fn(density, points, mask, st_size))
            row = {"loss": name, "batch": batch, "padded_points": max_points,
                   "gcc_jax_s": _median_time(lambda: jax.block_until_ready(fn(density, points, mask, st_size)), 10,
                                             deadline)}  # fmt: skip
            official = official_value_and_grad(name, density, point_list, st_size, crop=crop)
            if official is not None:
                with _TorchOnDevice() as device:
                    ref_loss, ref_grad = official()
                    row["official_s"] = _median_time(official, 5, deadline)
                row["official_device"] = device
                row["official_over_gcc_jax"] = row["official_s"] / row["gcc_jax_s"]
                row["rel_diff_loss"] = abs(float(loss) - ref_loss) / max(abs(ref_loss), 1e-30)
                row["rel_diff_grad"] = float(np.abs(np.asarray(grad) - ref_grad).max() / max(np.abs(ref_grad).max(), 1e-30))
            rows.append(row)
    return {"rows": rows}


def _step_inputs(settings: dict) -> dict:
    from benchmarks.train_step_speed import make_inputs

    return make_inputs(settings["batch"], settings["crop"], settings["heads"], 0)


def train_step(settings: dict, deadline: float) -> dict:
    from benchmarks.train_step_speed import JaxStep
    from gcc_jax.models import VGG19Density, forward_flops

    peak = REPORT.data["parts"].get("matmul_peak", {})
    inputs = _step_inputs(settings)
    flops = 3 * forward_flops(VGG19Density(width=settings["width"]), height=settings["crop"], width=settings["crop"])
    result = {"width": settings["width"], "crop": settings["crop"], "batch": settings["batch"], "loss": "gl",
              "flops_per_image": flops}  # fmt: skip
    for dtype in settings["dtypes"]:
        if time.perf_counter() > deadline:
            result[dtype] = {"skipped": "time budget"}
            continue
        step = JaxStep("gl", inputs, width=settings["width"], crop=settings["crop"], dtype=dtype)
        seconds = _median_time(step.run, settings["step_repeats"], deadline)
        loss_seconds = _median_time(step.run_loss, settings["step_repeats"], deadline)
        row = {"compile_s": step.compile_s, "step_s": seconds, "images_per_s": settings["batch"] / seconds,
               "loss_share": loss_seconds / seconds}  # fmt: skip
        if f"{dtype}_tflops" in peak:
            row["mfu"] = flops * settings["batch"] / seconds / (peak[f"{dtype}_tflops"] * 1e12)
        result[dtype] = row
    return result


def torch_step(settings: dict, deadline: float) -> dict:
    import torch  # noqa: F401 - a missing torch skips the part

    from benchmarks.train_step_speed import TorchStep

    with _TorchOnDevice() as device:
        step = TorchStep("gl", _step_inputs(settings), width=settings["width"], crop=settings["crop"], device=device)
        seconds = _median_time(step.run, settings["torch_repeats"], deadline)
    result = {"device": device, "step_s": seconds, "images_per_s": settings["batch"] / seconds}
    jax_step = REPORT.data["parts"].get("train_step", {}).get("float32", {})
    if "step_s" in jax_step:
        result["torch_over_gcc_jax"] = seconds / jax_step["step_s"]
    return result


def end_to_end(settings: dict, deadline: float) -> dict:
    image = settings["e2e_image"]
    overrides = {
        "model.width": settings["width"], "crop_size": settings["crop"], "batch_size": settings["batch"],
        "eval_batch_size": settings["batch"], "dataset.loader": "grain", "dataset.max_points": settings["heads"],
        "dataset.synthetic.height": image, "dataset.synthetic.width": image,
        "dataset.synthetic.num_train": settings["e2e_train"], "dataset.synthetic.num_val": settings["batch"],
        "dataset.synthetic.max_people": settings["heads"] // 2, "num_train_steps": settings["e2e_steps"],
        "log_every_steps": settings["e2e_log"], "eval_every_epochs": 10**6, "checkpoint_every_steps": 10**6,
        "num_pictures": 0, "localization.enabled": False, "progress_bar": False,
        # The references' rate: the synthetic config's 1e-3 is for its narrow network.
        "optimizer.learning_rate": 1e-5,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, str(ROOT / "train.py"), f"--config={ROOT / 'configs' / 'synthetic.py'}",
                   f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]  # fmt: skip
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                             timeout=max(deadline - time.perf_counter(), 10))  # fmt: skip
        wall = time.perf_counter() - start
        if run.returncode:
            return {"failed": run.stderr[-3000:]}
        records = [json.loads(line) for line in pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train" and "steps_per_second" in r]
    rates = [r["steps_per_second"] for r in train]
    # Epoch 0 holds the compilation and generates the synthetic images (about 0.1 s of one CPU
    # core each at 576 x 576; kept in memory afterwards): measure the epochs after it.
    first_epoch_steps = settings["e2e_train"] // settings["batch"]
    steady = [r["steps_per_second"] for r in train if r["step"] > first_epoch_steps] or rates[1:] or rates
    result = {"steps": settings["e2e_steps"], "wall_s": wall, "intervals_steps_per_s": rates,
              "images_per_s": float(np.median(steady)) * settings["batch"]}  # fmt: skip
    step_only = REPORT.data["parts"].get("train_step", {}).get("float32", {}).get("images_per_s")
    if step_only:
        result["fraction_of_step_only"] = result["images_per_s"] / step_only
    return result


def _fmt(value, spec=".3g"):
    return "–" if value is None else format(value, spec)


def markdown(data: dict) -> str:
    parts = data["parts"]
    lines = ["# Accelerator check", "", f"Settings: `{json.dumps(data['settings'])}`", ""]
    if "environment" in parts:
        env = parts["environment"]
        lines += [f"Devices: {len(env['devices'])} × {env['devices'][0]} ({env['platform']}); "
                  f"missing: {', '.join(env['missing']) or 'nothing'}.", ""]  # fmt: skip
        lines += ["| package | version |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env["versions"].items()] + [""]
    if "matmul_peak" in parts:
        peak = parts["matmul_peak"]
        lines += [f"Matmul peak ({peak['size']}²): float32 {_fmt(peak.get('float32_tflops'))} TFLOP/s, "
                  f"bfloat16 {_fmt(peak.get('bfloat16_tflops'))} TFLOP/s.", ""]  # fmt: skip
    if "losses" in parts:
        lines += ["| loss | M | gcc_jax ms | official ms | official / gcc_jax | rel. diff loss | rel. diff grad |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in parts["losses"].get("rows", []):
            ms = {k: (row[k] * 1e3 if k in row else None) for k in ("gcc_jax_s", "official_s")}
            lines.append(f"| {row['loss']} | {row['padded_points']} | {_fmt(ms['gcc_jax_s'])} | {_fmt(ms['official_s'])} | "
                         f"{_fmt(row.get('official_over_gcc_jax'))} | {_fmt(row.get('rel_diff_loss'), '.1e')} | "
                         f"{_fmt(row.get('rel_diff_grad'), '.1e')} |")  # fmt: skip
        lines.append("")
    if "train_step" in parts:
        step = parts["train_step"]
        lines += ["| train step | images/s | ms | loss share | MFU |", "|---|---|---|---|---|"]
        for dtype in ("float32", "bfloat16"):
            row = step.get(dtype, {})
            lines.append(f"| gcc_jax {dtype} | {_fmt(row.get('images_per_s'), '.1f')} | "
                         f"{_fmt(row['step_s'] * 1e3 if 'step_s' in row else None, '.1f')} | "
                         f"{_fmt(row.get('loss_share'), '.2f')} | {_fmt(row.get('mfu'), '.2f')} |")  # fmt: skip
        torch_row = parts.get("torch_step", {})
        if "images_per_s" in torch_row:
            lines.append(f"| PyTorch + official GL ({torch_row['device']}) | {torch_row['images_per_s']:.1f} | "
                         f"{torch_row['step_s'] * 1e3:.1f} | – | – |")  # fmt: skip
        lines.append("")
    if "end_to_end" in parts:
        e2e = parts["end_to_end"]
        lines.append(f"End to end (`train.py`, Grain loader, synthetic crowds): {_fmt(e2e.get('images_per_s'), '.1f')} "
                     f"images/s = {_fmt(e2e.get('fraction_of_step_only'), '.2f')} of the step-only float32 figure.")
    for name, result in parts.items():
        for key in ("skipped", "failed", "error"):
            if key in result:
                lines.append(f"- {name}: {key}: {str(result[key])[:500]}")
    return "\n".join(lines) + "\n"


PARTS = {"environment": lambda s, d: environment(), "matmul_peak": matmul_peak, "losses": losses,
         "train_step": train_step, "torch_step": torch_step, "end_to_end": end_to_end}  # fmt: skip
REPORT: Report


def main(argv=None) -> None:
    global REPORT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for accelerator_check.json / .md")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU, tests)")
    parser.add_argument("--budget_s", type=float, default=450.0, help="time for the whole check")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of the parts")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    REPORT = Report(pathlib.Path(args.out), {**settings, "quick": args.quick, "budget_s": args.budget_s})
    scale = args.budget_s / sum(BUDGETS.values())
    start = time.perf_counter()
    for name in args.parts.split(","):
        left = args.budget_s - (time.perf_counter() - start)
        budget = min(BUDGETS[name] * scale, left)
        if budget < 0.2 * BUDGETS[name] * scale:
            REPORT.record(name, {"skipped": f"{left:.0f} s left of --budget_s"})
            continue
        part_start = time.perf_counter()
        try:
            result = PARTS[name](settings, part_start + budget)
        except ImportError as error:
            result = {"skipped": f"{error} (see benchmarks/README.md for the wheels)"}
        except Exception as error:  # noqa: BLE001 - one part's failure must not lose the others
            result = {"error": f"{type(error).__name__}: {error}"}
        result["seconds"] = time.perf_counter() - part_start
        REPORT.record(name, result)
        print(f"{name}: {result['seconds']:.1f} s", flush=True)
    print(markdown(REPORT.data))


if __name__ == "__main__":
    main()
