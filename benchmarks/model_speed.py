"""VGG19Density in JAX beside the same network in PyTorch: size, cost, agreement and CPU speed.

    python benchmarks/model_speed.py [--size 512 512] [--repeats 10] [--variant gl]

Builds the PyTorch reference network of the tests (tests/models/torch_vgg_reference.py, plain
torch.nn) at full width with random weights, converts its state dict with
``gcc_jax.models.params_from_torch``, and reports: parameter counts (both), FLOPs per image
(the conventional 2 × conv multiply-adds, and XLA's own count), the largest output difference,
and the median wall time of one forward pass on one image — ``jax.jit`` (compiled once, not
timed) and ``torch`` eager under ``inference_mode`` — timed alternately in the same process so
that both see the same machine load. Needs the ``bench`` or ``torch`` extra.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from gcc_jax.models import VGG19Density, forward_flops, official_head, param_count, params_from_torch

# The independent plain-torch network the equivalence tests check against.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "models"))
from torch_vgg_reference import TorchVGGDensity, randomize_  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per framework")
    parser.add_argument("--variant", default="gl", choices=("gl", "bl", "dm_count"))
    args = parser.parse_args()
    height, width = args.size
    options = official_head(args.variant)

    net = randomize_(TorchVGGDensity(1.0, density_layer=args.variant == "dm_count", **options).eval())
    variables = params_from_torch(net.state_dict())
    model = VGG19Density(**options)

    images = np.random.default_rng(0).standard_normal((1, height, width, 3)).astype(np.float32)
    images_jax = jnp.asarray(images)
    images_torch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    forward = jax.jit(model.apply)
    compiled = forward.lower(variables, images_jax).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost

    def run_jax():
        return forward(variables, images_jax).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return net(images_torch)

    out_jax, out_torch = np.asarray(run_jax()), run_torch().numpy()
    max_abs = float(np.max(np.abs(out_jax - out_torch)))
    rel = max_abs / float(np.max(np.abs(out_torch)))

    times_jax, times_torch = [], []
    for _ in range(args.repeats):
        for fn, store in ((run_jax, times_jax), (run_torch, times_torch)):
            start = time.perf_counter()
            fn()
            store.append(time.perf_counter() - start)
    med_jax, med_torch = statistics.median(times_jax), statistics.median(times_torch)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__} "
          f"({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"model: VGG19Density(width=1, {options}); input 1x{height}x{width}x3")
    print(f"parameters: flax {param_count(variables):,}, torch {sum(p.numel() for p in net.parameters()):,}")
    print(f"FLOPs per image: {forward_flops(model, height=height, width=width) / 1e9:.2f} G (2 x conv MACs); "
          f"XLA cost analysis {cost['flops'] / 1e9:.2f} G (valid taps only + element-wise)")
    print(f"output [{out_jax.shape[1]}, {out_jax.shape[2]}]: max |jax - torch| = {max_abs:.3g}, "
          f"relative to max |torch| = {rel:.3g}; counts {out_jax.sum():.6g} vs {out_torch.sum():.6g}")
    print(f"forward time, median of {args.repeats} (interleaved): jax.jit {med_jax * 1e3:.0f} ms, "
          f"torch {med_torch * 1e3:.0f} ms, ratio jax/torch {med_jax / med_torch:.2f}")
    print(f"  jax runs (ms):   {' '.join(f'{t * 1e3:.0f}' for t in times_jax)}")
    print(f"  torch runs (ms): {' '.join(f'{t * 1e3:.0f}' for t in times_torch)}")


if __name__ == "__main__":
    main()
