"""What a benchmark ran on and what it measured: CPU model, cores, memory, load, library
versions, and the commit of the code — for every table and figure, so that numbers are never
quoted without the machine and the code that produced them."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess

__all__ = ["code_label", "describe_code", "describe_machine", "machine_label"]

_REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
# What a result depends on: the package, the configs and the benchmark scripts themselves.
_MEASURED_PATHS = ("gcc_jax", "configs", "benchmarks")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def describe_machine() -> dict:
    """CPU model, core count, memory, 1-minute load average and the versions that matter.

    Returns:
      a JSON-able dict: ``cpu``, ``cores``, ``memory_gib``, ``load_1min`` (``os.getloadavg``
      when the benchmark starts; above ``cores`` means other work shared the CPU),
      ``backend`` (JAX's default backend), ``jax``, ``torch`` (``None`` if not installed).
    """
    import jax

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    memory = _memory_gib()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": None if memory is None else round(memory, 1),
        "load_1min": round(os.getloadavg()[0], 2),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "torch": torch_version,
    }


def machine_label(info: dict | None = None) -> str:
    """One line for a figure or a table caption, e.g. ``"Intel Xeon, 2 cores, 23 GiB, load 3.1; jax 0.10 (cpu)"``."""
    info = info or describe_machine()
    memory = f", {info['memory_gib']:.0f} GiB" if info.get("memory_gib") else ""
    torch = f", torch {info['torch']}" if info.get("torch") else ""
    return (
        f"{info['cpu']}, {info['cores']} cores{memory}, load {info['load_1min']:.1f} at start; "
        f"jax {info['jax']} ({info['backend']}){torch}"
    )


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=_REPOSITORY, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.rstrip("\n")  # porcelain lines begin with a status column that may be a space


def describe_code() -> dict:
    """The commit of the code a benchmark measures, and whether the working tree differed from it.

    Returns:
      a JSON-able dict: ``commit`` (``git rev-parse HEAD`` of this checkout, ``None`` outside a
      git checkout) and ``uncommitted`` (the paths under ``gcc_jax/``, ``configs/`` and
      ``benchmarks/`` that differ from that commit, ``benchmarks/results/`` excepted; empty
      when the commit is exactly the code that ran).
    """
    status = _git("status", "--porcelain", "--", *_MEASURED_PATHS, ":!benchmarks/results")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted": [] if not status else [line[3:] for line in status.splitlines()],
    }


def code_label(code: dict | None = None) -> str:
    """One line for a caption, e.g. ``"commit 855fb8db61"``, naming any uncommitted changes."""
    code = code or describe_code()
    label = f"commit {(code['commit'] or 'unknown')[:10]}"
    return label + (f" with uncommitted changes to {', '.join(code['uncommitted'])}" if code["uncommitted"] else "")
