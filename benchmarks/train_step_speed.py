"""Training-step throughput (images/s) of gcc_jax beside a PyTorch step of the same network.

    python benchmarks/train_step_speed.py --out benchmarks/results/train_step_speed.json
    python benchmarks/train_step_speed.py --widths 1 --crops 512 --batch 8 --steps 5   # slow on a CPU

For each network width (``--widths``: 1/8 = the narrow synthetic-config model, 1 = the
published VGG19) and square crop (``--crops``: 256 and 512):

* gcc_jax: the program's own jitted step (:func:`gcc_jax.training.make_train_step`: forward,
  the loss of ``--loss`` via :func:`gcc_jax.training.make_loss_fn`, backward, torch-style Adam,
  metrics), random initialisation, a random batch of ``--batch`` images; compile time apart,
  then the median of ``--steps`` steps;
* the loss alone: value+grad of the same loss, jitted, on random density maps of the model's
  output shape with the same points — its median over the step's median is the loss's share;
* PyTorch, when installed: the same network (``tests/models/torch_vgg_reference.py``, the head
  of ``--loss``'s official code), ``torch.optim.Adam``, and the official-style loss
  (``benchmarks.official_*``: a per-image loop, then ``backward``) — its output's gradient is
  computed by that loss and back-propagated through the network; likewise its loss alone.

Heads: image ``b`` holds ``m_b`` heads, uniform integers in ``[M/4, M]`` with ``M`` =
``--heads_256`` at crop 256 scaled by the crop's area (256 → 1024 at crop 512 by default, a
ShanghaiTech-A-like density), uniform over the crop and padded to ``M``.

Steps alternate between the frameworks (one of each per round), so load changes hit both;
the PyTorch step is timed with torch at 1 and at 2 intra-op threads (``--torch_threads``) and
the faster median counts (torch's thread pool suffers most on a loaded CPU).
On a 2-core CPU the full VGG19 at crop 512 takes tens of seconds per step: keep ``--steps``
small there, or use ``--widths 0.125``.
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


def make_inputs(batch: int, crop: int, max_points: int, seed: int) -> dict[str, np.ndarray]:
    """Random images (normalised scale), heads, mask, targets and source sizes of one batch."""
    rng = np.random.default_rng([seed, batch, crop])
    counts = rng.integers(max(max_points // 4, 1), max_points + 1, size=batch)
    points = np.zeros((batch, max_points, 2), np.float32)
    mask = np.arange(max_points)[None, :] < counts[:, None]
    points[mask] = rng.uniform(0, crop, (int(mask.sum()), 2))
    return {
        "image": rng.standard_normal((batch, crop, crop, 3)).astype(np.float32),
        "points": points,
        "point_mask": mask,
        "targets": mask.astype(np.float32),
        "st_size": np.full((batch,), 1.5 * crop, np.float32),
    }


def _config(loss: str, *, width: float, crop: int, batch: int, max_points: int):
    from gcc_jax.runtime import load_config_module, resolve_recipe

    config = load_config_module(ROOT / "configs" / "default.py").get_config()
    config.loss.name = loss
    config.model.width = width
    config.crop_size = crop
    config.batch_size = batch
    config.dataset.max_points = max_points
    config.optimizer.warmup_epochs = 0
    return resolve_recipe(config)


class JaxStep:
    """The program's jitted train step and the jitted loss value+grad, ready to time."""

    def __init__(self, loss: str, inputs: dict, *, width: float, crop: int, dtype: str = "float32"):
        import jax

        from gcc_jax.runtime import create_mesh, create_model, global_batch
        from gcc_jax.training import (
            create_learning_rate_fn,
            create_optimizer,
            create_train_state,
            make_loss_fn,
            make_train_step,
        )
        from gcc_jax.training.steps import TRAIN_BATCH_KEYS

        batch = len(inputs["image"])
        config = _config(loss, width=width, crop=crop, batch=batch, max_points=inputs["points"].shape[1])
        config.model.dtype = dtype
        mesh = create_mesh()
        schedule = create_learning_rate_fn(config.optimizer, steps_per_epoch=1)
        model = create_model(config)
        self.state = create_train_state(config, model, create_optimizer(config.optimizer, schedule), mesh)
        loss_fn = make_loss_fn(config.loss, crop_size=crop)
        self.step_fn = make_train_step(mesh, loss_fn=loss_fn, learning_rate_fn=schedule)
        self.batch = global_batch({k: inputs[k] for k in TRAIN_BATCH_KEYS if k in inputs}, mesh)
        start = time.perf_counter()
        self.step_fn.lower(self.state, self.batch).compile()
        self.compile_s = time.perf_counter() - start
        self.run()  # the first call (dispatch-cache fill)

        h, w = crop // 8, crop // 8
        density = np.random.default_rng(1).uniform(0, 0.02, (batch, h, w)).astype(np.float32)
        loss_batch = {k: self.batch[k] for k in ("points", "point_mask", "targets", "st_size")}
        self.loss_value_and_grad = jax.jit(jax.value_and_grad(lambda d, b: loss_fn(d, b)[0]))
        self.loss_args = (jax.numpy.asarray(density), loss_batch)
        self.run_loss()

    def run(self) -> None:
        import jax

        self.state, metrics = self.step_fn(self.state, self.batch)
        jax.block_until_ready(metrics["loss"])

    def run_loss(self) -> None:
        import jax

        jax.block_until_ready(self.loss_value_and_grad(*self.loss_args))


class TorchStep:
    """A PyTorch train step of the same network with the official-style loss, ready to time."""

    def __init__(self, loss: str, inputs: dict, *, width: float, crop: int, device: str = "cpu"):
        import torch

        from gcc_jax.models import official_head

        sys.path.insert(0, str(ROOT / "tests" / "models"))
        from torch_vgg_reference import TorchVGGDensity

        self.torch = torch
        self.device = device
        self.net = TorchVGGDensity(width, density_layer=loss == "dm_count", **official_head(loss)).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-5, weight_decay=1e-4)
        self.images = torch.from_numpy(inputs["image"]).permute(0, 3, 1, 2).contiguous().to(device)
        self.value_and_grad = official_loss(loss, inputs, crop=crop)
        h = crop // 8
        self.density = np.random.default_rng(1).uniform(0, 0.02, (len(inputs["image"]), h, h)).astype(np.float32)
        self.run()

    def run(self) -> None:
        # The official-style loss takes the density as numpy (a [B, h/8, w/8] copy each way on
        # a GPU, small beside the step) and runs on torch's default device.
        outputs = self.net(self.images)
        _, grad = self.value_and_grad(outputs.detach().cpu().numpy())
        self.optimizer.zero_grad()
        outputs.backward(self.torch.from_numpy(np.ascontiguousarray(grad)).to(self.device))
        self.optimizer.step()
        if self.device != "cpu":
            self.torch.cuda.synchronize()

    def run_loss(self) -> None:
        self.value_and_grad(self.density)


def official_loss(loss: str, inputs: dict, *, crop: int):
    """``density -> (loss, grad)`` of the official-style torch computation of ``loss``."""
    points = [p[m] for p, m in zip(inputs["points"], inputs["point_mask"])]
    if loss == "gl":
        from benchmarks.official_gl import official_gl_value_and_grad

        return lambda d: official_gl_value_and_grad(d, points, crop_size=crop)
    if loss == "bl":
        from benchmarks.official_bl import official_bl_value_and_grad

        return lambda d: official_bl_value_and_grad(d, points, st_sizes=inputs["st_size"])
    if loss == "dm_count":
        from benchmarks.official_dm_count import discrete_map, official_dm_count_value_and_grad

        h = crop // 8
        discrete = np.stack([discrete_map(p, height=h, width=h) for p in points])
        return lambda d: official_dm_count_value_and_grad(d, points, discrete=discrete)[:2]
    from benchmarks.official_l2 import torch_l2_value_and_grad

    return lambda d: torch_l2_value_and_grad(d, points)  # σ = 15 px, the config default


def with_torch_threads(fn, threads: int):
    """``fn`` run with torch limited to ``threads`` intra-op threads."""

    def run():
        import torch

        torch.set_num_threads(threads)
        return fn()

    return run


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(width: float, crop: int, args) -> dict:
    max_points = max(int(round(args.heads_256 * (crop / 256) ** 2)), 1)
    inputs = make_inputs(args.batch, crop, max_points, args.seed)
    row = {"width": width, "crop": crop, "batch": args.batch, "loss": args.loss, "padded_points": max_points,
           "heads_mean": float(inputs["point_mask"].sum(1).mean())}  # fmt: skip
    contenders = {}
    jax_step = JaxStep(args.loss, inputs, width=width, crop=crop)
    row["jax_compile_s"] = jax_step.compile_s
    contenders["jax_step"], contenders["jax_loss"] = jax_step.run, jax_step.run_loss
    if not args.no_torch:
        try:
            torch_step = TorchStep(args.loss, inputs, width=width, crop=crop)
            for threads in args.torch_threads:
                contenders[f"torch_step_{threads}t"] = with_torch_threads(torch_step.run, threads)
                contenders[f"torch_loss_{threads}t"] = with_torch_threads(torch_step.run_loss, threads)
        except ImportError as error:
            print(f"PyTorch step skipped ({error}); pip install 'gcc_jax[bench]'")
    times = {name: [] for name in contenders}
    for _ in range(args.steps):
        for name, fn in contenders.items():
            times[name].append(_timed(fn))
    for name, t in times.items():
        row[f"{name}_median_s"] = float(np.median(t))
        row[f"{name}_runs_s"] = [float(v) for v in t]
    steps = {t: row[f"torch_step_{t}t_median_s"] for t in args.torch_threads if f"torch_step_{t}t_median_s" in row}
    if steps:  # torch's faster thread setting counts (the comparison least favourable to gcc_jax)
        row["torch_threads"] = min(steps, key=steps.get)
        row["torch_step_median_s"] = steps[row["torch_threads"]]
        row["torch_loss_median_s"] = row[f"torch_loss_{row['torch_threads']}t_median_s"]
    for who in ("jax", "torch"):
        if f"{who}_step_median_s" in row:
            row[f"{who}_images_per_s"] = args.batch / row[f"{who}_step_median_s"]
            row[f"{who}_loss_share"] = row[f"{who}_loss_median_s"] / row[f"{who}_step_median_s"]
    if "torch_step_median_s" in row:
        row["torch_over_jax"] = row["torch_step_median_s"] / row["jax_step_median_s"]
    return row


def markdown(rows, machine: str, command: str) -> str:
    lines = [
        "| width | crop | B | heads (mean) | compile s | gcc_jax img/s | loss share | torch img/s (threads) | loss share | torch / gcc_jax step time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        width = "1/8" if abs(r["width"] - 0.125) < 1e-9 else f"{r['width']:g}"
        torch_cols = (
            f"{r['torch_images_per_s']:.2f} ({r['torch_threads']}t) | {100 * r['torch_loss_share']:.0f}% | **{r['torch_over_jax']:.2f}**"
            if "torch_images_per_s" in r else "— | — | —"
        )  # fmt: skip
        lines.append(
            f"| {width} | {r['crop']} | {r['batch']} | {r['heads_mean']:.0f} | {r['jax_compile_s']:.1f} | "
            f"{r['jax_images_per_s']:.2f} | {100 * r['jax_loss_share']:.0f}% | {torch_cols} |"
        )
    lines += ["", f"Loss: {rows[0]['loss']}. Machine: {machine}. Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", default="gl", choices=("gl", "bl", "dm_count", "l2"))
    parser.add_argument("--widths", type=lambda s: tuple(float(v) for v in s.split(",")), default=(0.125, 1.0))
    parser.add_argument("--crops", type=lambda s: tuple(int(v) for v in s.split(",")), default=(256, 512))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per framework (median reported)")
    parser.add_argument("--heads_256", type=int, default=256, help="padded heads per image at crop 256 (M, scaled by area)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument("--torch_threads", type=lambda s: tuple(int(v) for v in s.split(",")), default=(1, 2),
                        help="torch intra-op thread counts to time the PyTorch step with; the fastest counts")
    parser.add_argument("--out", default=None, help="write the rows as JSON here (and a .md table beside it)")
    args = parser.parse_args(argv)
    info = describe_machine()
    machine = machine_label(info)
    command = ("python benchmarks/train_step_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    print(machine, flush=True)
    rows = []
    for width in args.widths:
        for crop in args.crops:
            row = measure(width, crop, args)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("_runs_s")}), flush=True)
    info["load_1min_end"] = round(os.getloadavg()[0], 2)
    table = markdown(rows, machine, command)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump({"machine": info, "command": command, "rows": rows}, handle, indent=2)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as handle:
            handle.write(table)


if __name__ == "__main__":
    main()
