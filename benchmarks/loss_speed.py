"""Speed of GL value+grad: gcc_jax (jitted) beside the official PyTorch + geomloss computation.

    python benchmarks/loss_speed.py                       # the issue's batch: B=8, 64×64, heads
                                                          # (37, 120, 260, 410, 75, 500, 190, 330)
    python benchmarks/loss_speed.py --heads 500           # B=1 with 500 heads
    python benchmarks/loss_speed.py --memory --heads 4096,4096,4096,4096,4096,4096,4096,4096

For each gcc_jax implementation (``chunked``, the CPU default, and ``dense``) it reports the
compile time (first call) and the median of ``--repeats`` timed calls after it; the official
computation (a per-image loop over geomloss's ``SamplesLoss`` with the reference's cost,
potentials, plan and terms, then ``backward``; needs ``pip install "gcc_jax[bench]"``) runs
interleaved with them on the same inputs, so the printed ratio comes from one run on one
machine. ``--memory`` measures peak RSS of one implementation in a fresh subprocess instead.
Results are printed and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# Run as a script from anywhere: make the repository root importable (for benchmarks.official_gl).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import describe_machine  # noqa: E402

ISSUE_HEADS = (37, 120, 260, 410, 75, 500, 190, 330)


def make_batch(heads, *, size=64, crop=512, pad_to=None, seed=0):
    """Random density maps ``[B, size, size]`` and uniformly scattered heads, padded + mask."""
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.0, 0.02, (len(heads), size, size)).astype(np.float32)
    points = [rng.uniform(0.0, crop, (m, 2)).astype(np.float32) for m in heads]
    width = pad_to or max(max(heads), 1)
    padded = np.zeros((len(heads), width, 2), np.float32)
    mask = np.zeros((len(heads), width), bool)
    for b, p in enumerate(points):
        padded[b, : len(p)], mask[b, : len(p)] = p, True
    return density, points, padded, mask


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_speed(args):
    import jax

    from gcc_jax.losses import generalized_loss

    density, point_list, points, mask = make_batch(args.heads, size=args.size, crop=args.crop, pad_to=args.pad_to)
    implementations = args.implementations.split(",")
    fns = {
        impl: jax.jit(jax.value_and_grad(
            lambda d, x, m, impl=impl: generalized_loss(d, x, m, crop_size=args.crop, cost=args.cost, implementation=impl)[0]
        ))  # fmt: skip
        for impl in implementations
    }
    compile_s, values = {}, {}
    for impl, fn in fns.items():
        values[impl], compile_s[impl] = _timed(lambda fn=fn: jax.block_until_ready(fn(density, points, mask)))

    official = None
    try:
        import torch

        from benchmarks.official_gl import official_gl_value_and_grad

        torch.set_num_threads(os.cpu_count() or 1)

        def official():
            return official_gl_value_and_grad(density, point_list, crop_size=args.crop, cost=args.cost)

        values["official"], _ = _timed(official)  # warm-up
    except ImportError as error:
        print(f"official computation skipped ({error}); pip install 'gcc_jax[bench]'")

    times = {name: [] for name in list(fns) + (["official"] if official else [])}
    for _ in range(args.repeats):  # interleaved, so that load changes hit every contender
        for impl, fn in fns.items():
            _, seconds = _timed(lambda fn=fn: jax.block_until_ready(fn(density, points, mask)))
            times[impl].append(seconds)
        if official:
            _, seconds = _timed(official)
            times["official"].append(seconds)

    medians = {name: float(np.median(t)) for name, t in times.items()}
    result = {
        "heads": list(args.heads),
        "map": [args.size, args.size],
        "padded_points": int(points.shape[1]),
        "cost": args.cost,
        "repeats": args.repeats,
        "median_s": medians,
        "compile_s": compile_s,
        "machine": describe_machine(),
    }
    if official:
        result["official_over"] = {impl: medians["official"] / medians[impl] for impl in fns}
        ref_loss, ref_grad = values["official"]
        result["max_rel_error_vs_official"] = {
            impl: {
                "loss": abs(float(values[impl][0]) - ref_loss) / abs(ref_loss),
                "grad": float(np.abs(np.asarray(values[impl][1]) - ref_grad).max() / np.abs(ref_grad).max()),
            }
            for impl in fns
        }
    return result


def run_memory(args):
    """Peak RSS of one GL value+grad in a fresh process (so earlier work does not count)."""
    results = {}
    for impl in args.implementations.split(","):
        code = (
            "import resource, sys, jax; sys.path.insert(0, %r)\n"
            "from benchmarks.loss_speed import make_batch\n"
            "from gcc_jax.losses import generalized_loss\n"
            "d, _, x, m = make_batch(%r, size=%d, crop=%d)\n"
            "f = jax.jit(jax.value_and_grad(lambda d: generalized_loss(d, x, m, crop_size=%d, implementation=%r)[0]))\n"
            "jax.block_until_ready(f(d))\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        ) % (sys.path[0], tuple(args.heads), args.size, args.crop, args.crop, impl)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            results[impl] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else f"exit {proc.returncode}"}
        else:
            results[impl] = {"peak_rss_mb": int(proc.stdout.split()[-1]) / 1024}
    return {"heads": list(args.heads), "map": [args.size, args.size], "peak_memory": results, "machine": describe_machine()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=lambda s: tuple(int(v) for v in s.split(",")), default=ISSUE_HEADS,
                        help="comma-separated head counts, one per image (the batch size)")
    parser.add_argument("--pad_to", type=int, default=None, help="padded points per image (default: the batch maximum)")
    parser.add_argument("--size", type=int, default=64, help="density map side (cells)")
    parser.add_argument("--crop", type=int, default=512, help="crop side in pixels")
    parser.add_argument("--cost", default="per", choices=("per", "exp"))
    parser.add_argument("--implementations", default="chunked,dense")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", action="store_true", help="measure peak RSS instead of time")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    result = run_memory(args) if args.memory else run_speed(args)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
