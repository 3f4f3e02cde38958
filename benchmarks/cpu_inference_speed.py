"""CPU inference of the full-width network on one photo: jax.jit, XLA options, predict's
engines, the exported ONNX and LiteRT files, and PyTorch, interleaved.

    python benchmarks/cpu_inference_speed.py --out benchmarks/results/cpu_inference_speed.json
    python benchmarks/cpu_inference_speed.py --size 384 512 --repeats 3   # a quicker look

The network is ``VGG19Density()`` (width 1, the default head: nearest ×2 upsampling, abs, as
GL's official network) with the random weights of the PyTorch reference network of the tests
(``tests/models/torch_vgg_reference.py``) converted by ``params_from_torch``, so that every
contender runs the same network with the same weights. The input is one real photo
(ShanghaiTech B ``IMG_1.jpg``, 768 × 1024) resized to ``--size``. Contenders, each timed on
one image (batch 1) after a warm-up call:

* ``torch``: the PyTorch network, eager, ``inference_mode``, NCHW input (normalised in numpy);
* ``jax.jit``: ``jax.jit(model.apply)`` on the normalised NHWC image, XLA's default options;
* ``jax.jit [OPTION]``: the same program compiled with one XLA CPU option (``--xla_options``,
  passed to ``Lowered.compile(compiler_options=...)``, so all run in one process);
* ``predict --engine E``: :meth:`gcc_jax.predict.Predictor.predict` on the uint8 image
  (normalisation, forward, head points), ``bucket=16``;
* ``onnxruntime file`` / ``litert file``: the files of ``python -m gcc_jax.export --format
  onnx|tflite --size H W`` (uint8 in; normalisation, density, count and peak map inside) in
  ``onnxruntime.InferenceSession`` / ``ai_edge_litert.interpreter.Interpreter``.

Rounds run every contender once, in turn (so load changes hit all alike); the table gives the
median of ``--repeats`` rounds and ``torch``'s median divided by each (above 1: faster than
torch). Threads: torch ``set_num_threads(T)``, ONNX Runtime ``intra_op_num_threads=T``,
LiteRT ``num_threads=T``, XLA's CPU client one thread per CPU of the process, with ``T`` the
CPUs this process may use (run under ``taskset`` for fewer). Every density map is checked
against torch's within ``vgg_rtol(1)`` (tests/tolerances.py: the float32 round-off bound of
a full-width forward pass) times its largest value; the predict engines' head points are
compared with each other. Needs the ``bench`` extra, and the ``export`` extra for the ONNX
rows (jax2onnx, onnxruntime) and TensorFlow + ai-edge-litert for the LiteRT row; a
contender whose package is missing is skipped, saying so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from PIL import Image

from gcc_jax.export import export_model
from gcc_jax.imagenet import normalize_images
from gcc_jax.models import VGG19Density, official_head, params_from_torch, save_variables
from gcc_jax.predict import Predictor
from gcc_jax.runtime.evaluation import local_eval_mesh

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "models"))
from benchmarks.machine import describe_machine, machine_label  # noqa: E402
from tolerances import vgg_rtol  # noqa: E402
from torch_vgg_reference import TorchVGGDensity, randomize_  # noqa: E402

PHOTO = ROOT / "tests" / "data" / "shanghaitech_sample" / "part_B" / "test_data" / "images" / "IMG_1.jpg"
DEFAULT_XLA_OPTIONS = ("xla_cpu_use_onednn=true",)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+uncommitted changes" if dirty else "")


def _parse_option(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if not value:
        raise ValueError(f"an XLA option is NAME=VALUE, got {text!r}")
    lowered = value.lower()
    return name, True if lowered == "true" else False if lowered == "false" else value


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"),
                        help="input size in pixels, multiples of 16 (default: the photo's 768 x 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median over them)")
    parser.add_argument("--xla_options", nargs="*", default=list(DEFAULT_XLA_OPTIONS),
                        help="XLA CPU options, NAME=VALUE, one jax.jit contender each")
    parser.add_argument("--out", default=None, help="JSON file (a Markdown table is written beside it)")
    args = parser.parse_args()  # fmt: skip
    height, width = args.size
    if height % 16 or width % 16:
        parser.error("--size must be multiples of 16 (the exported files and torch then run the same pixels)")
    commit = _commit()  # before the run: the checkout may change while it runs
    threads = _cpus()
    torch.set_num_threads(threads)
    info = describe_machine()
    print(machine_label(info), flush=True)

    options = official_head("gl")
    net = randomize_(TorchVGGDensity(1.0, **options).eval())
    # On the device once: a host tree would be copied into every call.
    variables = jax.device_put(params_from_torch(net.state_dict()))
    model = VGG19Density(**options)
    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize((width, height), Image.BILINEAR))
    normalised = normalize_images(photo)[None]
    contenders, skipped = {}, {}

    nchw = torch.from_numpy(normalised).permute(0, 3, 1, 2).contiguous()

    def run_torch():
        with torch.inference_mode():
            return net(nchw).numpy()

    contenders["torch"] = run_torch

    images = jnp.asarray(normalised)
    lowered = jax.jit(model.apply).lower(variables, images)
    compiled = {"jax.jit": lowered.compile()}
    for text in args.xla_options:
        name, value = _parse_option(text)
        compiled[f"jax.jit [{name}={text.partition('=')[2]}]"] = lowered.compile(compiler_options={name: value})
    for label, program in compiled.items():
        contenders[label] = lambda program=program: np.asarray(program(variables, images))

    mesh = local_eval_mesh(1)
    predictors = {}
    for engine in ("jax", "onnxruntime"):
        missing = _missing("onnxruntime", "jax2onnx") if engine == "onnxruntime" else []
        if missing:
            skipped[f"predict --engine {engine}"] = f"not installed: {', '.join(missing)}"
            continue
        predictors[engine] = Predictor(model, variables, mesh, bucket=16, one_per_plateau=True, engine=engine)
        contenders[f"predict --engine {engine}"] = lambda p=predictors[engine]: p.predict(photo).density[None]

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = pathlib.Path(scratch) / "model"
        save_variables(model_dir, variables, {"width": 1.0, **options})
        for fmt, modules in (("onnx", ("jax2onnx", "onnxruntime")), ("tflite", ("tensorflow", "ai_edge_litert"))):
            label = {"onnx": "onnxruntime file", "tflite": "litert file"}[fmt]
            missing = _missing(*modules)
            if missing:
                skipped[label] = f"not installed: {', '.join(missing)}"
                continue
            start = time.perf_counter()
            path = export_model(model_dir, pathlib.Path(scratch) / fmt, format=fmt, size=(height, width) if fmt == "tflite" else None)
            print(f"exported {fmt} in {time.perf_counter() - start:.0f} s", flush=True)
            contenders[label] = _file_runner(fmt, path, photo[None], threads)

        reference = run_torch()
        scale = float(np.abs(reference).max())
        tolerance = vgg_rtol(1.0) * scale
        rows = {}
        for label, run in contenders.items():
            start = time.perf_counter()
            density = np.asarray(run()).reshape(reference.shape)
            first = time.perf_counter() - start
            diff = float(np.abs(density - reference).max())
            rows[label] = {"first_call_s": first, "max_abs_diff_to_torch": diff, "within_tolerance": diff <= tolerance,
                           "times_s": []}  # fmt: skip
            print(f"{label}: first call {first:.1f} s, max |density - torch| {diff:.3g} (allowed {tolerance:.3g})",
                  flush=True)  # fmt: skip
        loads = [os.getloadavg()[0]]
        for round_ in range(args.repeats):
            for label, run in contenders.items():
                start = time.perf_counter()
                run()
                rows[label]["times_s"].append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])
            print(f"round {round_ + 1}/{args.repeats}: " + ", ".join(
                f"{label} {row['times_s'][-1]:.2f} s" for label, row in rows.items()) + f"; load {loads[-1]:.1f}",
                flush=True)  # fmt: skip

    points = {engine: p.predict(photo).points for engine, p in predictors.items()}
    torch_median = statistics.median(rows["torch"]["times_s"])
    for row in rows.values():
        row["median_s"] = statistics.median(row["times_s"])
        row["speed_vs_torch"] = torch_median / row["median_s"]
    result = {
        "commit": commit, "machine": info, "load_1min_per_round": [round(v, 2) for v in loads],
        "command": "python " + " ".join([pathlib.Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "size_hw": [height, width], "repeats": args.repeats, "model": {"width": 1.0, **options},
        "threads": {"torch": torch.get_num_threads(), "onnxruntime_intra_op": threads, "litert": threads,
                    "xla": f"CPU client pool, {threads} CPUs", "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
        "tolerance_abs": tolerance, "max_abs_torch_density": scale,
        "predict_points": {engine: len(p) for engine, p in points.items()},
        "predict_points_identical": (None if len(points) < 2 else
                                     bool(np.array_equal(points["jax"], points["onnxruntime"]))),
        "rows": rows, "skipped": skipped,
    }  # fmt: skip
    table = _table(result)
    print(table)
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(table + "\n")


def _file_runner(fmt: str, path: pathlib.Path, images: np.ndarray, threads: int):
    """A call that runs the exported file on ``images`` (uint8 ``[1, H, W, 3]``) and returns its density."""
    if fmt == "onnx":
        import onnxruntime

        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        return lambda: session.run(["density", "count", "peaks"], {"images": images})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    runner = interpreter.get_signature_runner()
    return lambda: runner(images=images)["density"]


def _table(result: dict) -> str:
    machine = machine_label(result["machine"])
    height, width = result["size_hw"]
    lines = [
        f"One {height}x{width} RGB image, VGG19Density width 1 (batch 1), median of {result['repeats']} interleaved "
        f"rounds. Machine: {machine}; load {min(result['load_1min_per_round']):.1f}-"
        f"{max(result['load_1min_per_round']):.1f} during the rounds. Threads: {result['threads']['torch']} "
        f"(torch, ONNX Runtime, LiteRT, XLA). Commit {result['commit'][:12]}. Command: `{result['command']}`",
        "",
        "| contender | median s | speed vs torch | max abs diff to torch | runs (s) |",
        "|---|---|---|---|---|",
    ]
    for label, row in result["rows"].items():
        runs = " ".join(f"{t:.2f}" for t in row["times_s"])
        lines.append(f"| {label} | {row['median_s']:.2f} | {row['speed_vs_torch']:.2f}x | "
                     f"{row['max_abs_diff_to_torch']:.2g} | {runs} |")  # fmt: skip
    for label, why in result["skipped"].items():
        lines.append(f"| {label} | skipped: {why} | | | |")
    lines.append("")
    lines.append(f"Densities within {result['tolerance_abs']:.2g} of torch's (vgg_rtol(1) x max "
                 f"{result['max_abs_torch_density']:.3g}): "
                 f"{all(r['within_tolerance'] for r in result['rows'].values())}; head points of predict "
                 f"{result['predict_points']}, identical across engines: "
                 f"{result['predict_points_identical']}.")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
