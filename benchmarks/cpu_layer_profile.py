"""Where the CPU time of a full-width forward pass goes: each layer of VGG19Density alone, XLA
(jax.jit) beside PyTorch, interleaved.

    python benchmarks/cpu_layer_profile.py --out benchmarks/results/cpu_layer_profile.json

For an input of ``--size`` pixels, every convolution of ``conv_layers(1.0)`` (3 × 3 or 1 × 1,
bias, ReLU but after the last head conv) runs alone on a random float32 input of its own shape
(stride 1 ... 16 of the features, the head at stride 8), and so do the four 2 × 2 max-pools and
the ×2 nearest upsampling: XLA as ``jax.jit`` of ``lax.conv_general_dilated`` in NHWC / HWIO
(the layout of ``flax.linen.Conv``, which the network uses), PyTorch as ``F.conv2d`` in NCHW
under ``inference_mode`` (oneDNN), one warm-up call each, then ``--repeats`` interleaved
rounds (median). The table says which layers make up the gap between the two forwards of
``benchmarks/cpu_inference_speed.py``. Threads: torch ``set_num_threads`` = XLA's pool = the
CPUs of the process. Needs torch (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from jax import lax

from gcc_jax.models import conv_layers

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.machine import describe_machine, machine_label  # noqa: E402


def _layers(height: int, width: int):
    """``(label, kind, in_shape NHWC, spec or None)`` in forward order."""
    specs = list(conv_layers(1.0))
    stride, out = 1, []
    for spec in specs[:16]:
        if spec.stride != stride:
            out.append((f"maxpool to stride {spec.stride}", "pool", (1, height // stride, width // stride, prev), None))
            stride = spec.stride
        out.append(("/".join(spec.path), "conv", (1, height // stride, width // stride, spec.in_channels), spec))
        prev = spec.out_channels
    out.append(("upsample x2 (nearest)", "upsample", (1, height // 16, width // 16, prev), None))
    for k, spec in enumerate(specs[16:]):
        out.append(("/".join(spec.path), "head_last" if k == 2 else "conv",
                    (1, height // 8, width // 8, spec.in_channels), spec))  # fmt: skip
    return out


def _contenders(kind: str, shape, spec, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    x_jax, x_torch = jnp.asarray(x), torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    if kind == "pool":
        f = jax.jit(lambda a: lax.reduce_window(a, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"))
        return (lambda: f(x_jax).block_until_ready()), (lambda: F.max_pool2d(x_torch, 2))
    if kind == "upsample":
        f = jax.jit(lambda a: jnp.repeat(jnp.repeat(a, 2, axis=1), 2, axis=2))
        return (lambda: f(x_jax).block_until_ready()), (lambda: F.interpolate(x_torch, scale_factor=2))
    k, c_in, c_out = spec.kernel_size, spec.in_channels, spec.out_channels
    kernel = (rng.standard_normal((k, k, c_in, c_out)) * np.sqrt(2 / (k * k * c_in))).astype(np.float32)
    bias = np.zeros(c_out, np.float32)
    pad = k // 2
    relu = kind == "conv"

    def conv(a, w, b):
        y = lax.conv_general_dilated(a, w, (1, 1), ((pad, pad), (pad, pad)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + b  # fmt: skip
        return jnp.maximum(y, 0) if relu else y

    f = jax.jit(conv)
    w_jax, b_jax = jnp.asarray(kernel), jnp.asarray(bias)
    w_torch, b_torch = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous(), torch.from_numpy(bias)

    def run_torch():
        y = F.conv2d(x_torch, w_torch, b_torch, padding=pad)
        return F.relu(y) if relu else y

    return (lambda: f(x_jax, w_jax, b_jax).block_until_ready()), run_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file (a Markdown table is written beside it)")
    args = parser.parse_args()
    height, width = args.size
    if height % 16 or width % 16:
        parser.error("--size must be multiples of 16")
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    info = describe_machine()
    print(machine_label(info), flush=True)
    rng = np.random.default_rng(0)
    rows = []
    with torch.inference_mode():
        for label, kind, shape, spec in _layers(height, width):
            run_jax, run_torch = _contenders(kind, shape, spec, rng)
            run_jax(), run_torch()  # compile / warm up
            times = {"jax": [], "torch": []}
            for _ in range(args.repeats):
                for name, run in (("jax", run_jax), ("torch", run_torch)):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
            row = {"layer": label, "input_nhwc": list(shape), "jax_s": statistics.median(times["jax"]),
                   "torch_s": statistics.median(times["torch"]), "runs": times, "load_1min": os.getloadavg()[0]}  # fmt: skip
            rows.append(row)
            print(f"{label:24s} {str(shape):24s} jax {row['jax_s']:.3f} s  torch {row['torch_s']:.3f} s  "
                  f"jax/torch {row['jax_s'] / row['torch_s']:.2f}  load {row['load_1min']:.1f}", flush=True)  # fmt: skip
    total_jax, total_torch = sum(r["jax_s"] for r in rows), sum(r["torch_s"] for r in rows)
    result = {"machine": info, "size_hw": [height, width], "repeats": args.repeats, "threads": threads,
              "command": "python " + " ".join([pathlib.Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "total_jax_s": total_jax, "total_torch_s": total_torch, "rows": rows}  # fmt: skip
    lines = [
        f"Each layer of VGG19Density (width 1) alone on a {height}x{width} input, median of {args.repeats} "
        f"interleaved rounds, {threads} threads. Machine: {machine_label(info)}. Command: `{result['command']}`",
        "",
        "| layer | input (NHWC) | jax.jit s | torch s | jax / torch |",
        "|---|---|---|---|---|",
        *(f"| {r['layer']} | {'x'.join(map(str, r['input_nhwc']))} | {r['jax_s']:.3f} | {r['torch_s']:.3f} | "
          f"{r['jax_s'] / r['torch_s']:.2f} |" for r in rows),
        f"| **sum** | | {total_jax:.2f} | {total_torch:.2f} | {total_jax / total_torch:.2f} |",
    ]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
