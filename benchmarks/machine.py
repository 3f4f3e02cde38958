"""What a benchmark ran on: CPU model, cores, memory, load, library versions — for every table
and figure, so that numbers are never quoted without the machine that produced them."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess

__all__ = ["code_commit", "describe_machine", "machine_label"]


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


_REPO = pathlib.Path(__file__).resolve().parents[1]


def code_commit() -> dict:
    """The commit of the code a benchmark measured.

    Returns:
      ``{"commit": SHA or None (not a git checkout), "uncommitted_changes": bool}``; the flag is
      set when ``gcc_jax/``, ``benchmarks/`` (results aside) or ``configs/`` differ from that commit, so that a
      figure is never credited to a commit whose code it did not run.
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "gcc_jax", "benchmarks", "configs", ":!benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": False}
    return {"commit": commit, "uncommitted_changes": bool(changed)}


def describe_machine() -> dict:
    """CPU model, core count, memory, 1-minute load average and the versions that matter.

    Returns:
      a JSON-able dict: ``cpu``, ``cores``, ``memory_gib``, ``load_1min`` (``os.getloadavg``
      when the benchmark starts; above ``cores`` means other work shared the CPU),
      ``backend`` (JAX's default backend), ``jax``, ``torch`` (``None`` if not installed),
      and :func:`code_commit`'s ``commit`` and ``uncommitted_changes``.
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
        **code_commit(),
    }


def machine_label(info: dict | None = None) -> str:
    """One line for a figure or a table caption, e.g. ``"Intel Xeon, 2 cores, 23 GiB, load 3.1 at start;
    jax 0.10.2 (cpu); gcc_jax 8204d71"``."""
    info = info or describe_machine()
    memory = f", {info['memory_gib']:.0f} GiB" if info.get("memory_gib") else ""
    torch = f", torch {info['torch']}" if info.get("torch") else ""
    commit = ""
    if info.get("commit"):
        commit = f"; gcc_jax {info['commit'][:7]}" + (" + uncommitted changes" if info.get("uncommitted_changes") else "")
    return (
        f"{info['cpu']}, {info['cores']} cores{memory}, load {info['load_1min']:.1f} at start; "
        f"jax {info['jax']} ({info['backend']}){torch}{commit}"
    )
