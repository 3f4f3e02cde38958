"""The forward pass of :class:`~gcc_jax.predict.Predictor`: the network on one padded tile, run
by JAX (``jax.jit``, the default) or by ONNX Runtime.

An engine is called with one normalised float32 tile ``[1, H, W, 3]`` (``H, W`` multiples of
16, RGB, :func:`gcc_jax.imagenet.normalize_images`) and returns its density
``[1, H/8, W/8]`` float32 as a numpy array. Both engines run the same network with the same
weights; they differ only in the order of their float32 operations, so their maps agree within
float32 round-off (the forward-pass bound of the tests' ``vgg_rtol``) and give the same head
points except where two pixels tie to within that round-off.

``onnxruntime`` converts the network with its weights to ONNX with jax2onnx (the converter of
``gcc_jax.export``), once per tile shape (images of one bucket share it; about a minute for the
full-width VGG19 on two cores, a second for a narrow one), and runs it in an
``InferenceSession`` on the CPU execution provider with ``threads`` intra-op threads (how it
compares with ``jax.jit`` and PyTorch: ``benchmarks/cpu_inference_speed.py``, README
*Results*). Needs ``pip install 'gcc_jax[export]'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gcc_jax.export._formats import ONNX_OPSET  # the opset of gcc_jax.export's files
from gcc_jax.runtime.mesh import batch_sharding
from gcc_jax.runtime.model import make_predict_fn

__all__ = ["ENGINES", "JaxEngine", "OnnxRuntimeEngine", "make_engine"]

# Names accepted by make_engine and ``python -m gcc_jax.predict --engine``.
ENGINES = ("jax", "onnxruntime")


class JaxEngine:
    """The network compiled by XLA (``jax.jit`` on a one-device mesh), one program per tile shape.

    Args:
      model: a ``VGG19Density``.
      variables: its variables, placed on ``mesh``.
      mesh: a one-device mesh.
    """

    name = "jax"

    def __init__(self, model, variables, mesh):
        self._forward = make_predict_fn(model.apply, mesh)
        self._variables = variables
        self._sharding = batch_sharding(mesh)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """``[1, H, W, 3]`` normalised float32 → density ``[1, H/8, W/8]`` float32."""
        return np.asarray(self._forward(self._variables, jax.device_put(tile, self._sharding)))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class OnnxRuntimeEngine:
    """The network converted to ONNX (jax2onnx) and run by ONNX Runtime on the CPU.

    Args:
      model: a ``VGG19Density``.
      variables: its variables (copied to the host; they become the ONNX file's initializers).
      threads: ONNX Runtime's intra-op threads; ``None``: the CPUs this process may use (what
        XLA's CPU client uses too).

    Raises:
      ImportError: onnxruntime or jax2onnx is not installed (the message says how to install them).
      ValueError: ``threads`` is not a positive integer.
    """

    name = "onnxruntime"

    def __init__(self, model, variables, *, threads: int | None = None):
        missing = [m for m in ("onnxruntime", "jax2onnx") if not _importable(m)]
        if missing:
            raise ImportError(
                f"--engine onnxruntime needs {' and '.join(missing)}: pip install 'gcc_jax[export]'"
            )
        if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = _cpu_count() if threads is None else int(threads)
        self._model = model
        self._variables = jax.device_get(variables)
        self._sessions: dict[tuple[int, ...], Any] = {}

    def _session(self, shape: tuple[int, ...]):
        import onnxruntime
        from jax2onnx import to_onnx

        logging.getLogger(__name__).info(
            "converting the network to ONNX for tiles of %d x %d pixels (once per tile shape)", shape[1], shape[2]
        )
        converted = to_onnx(
            lambda images: self._model.apply(self._variables, images),
            [jax.ShapeDtypeStruct(shape, jnp.float32)], model_name="gcc_jax_forward", opset=ONNX_OPSET,
            input_names=["images"], output_names=["density"],
        )  # fmt: skip
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        return onnxruntime.InferenceSession(
            converted.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """``[1, H, W, 3]`` normalised float32 → density ``[1, H/8, W/8]`` float32."""
        shape = tuple(tile.shape)
        if shape not in self._sessions:
            self._sessions[shape] = self._session(shape)
        return self._sessions[shape].run(["density"], {"images": np.ascontiguousarray(tile, np.float32)})[0]


def make_engine(name: str, model, variables, mesh) -> Callable[[np.ndarray], np.ndarray]:
    """The engine called ``name`` (one of :data:`ENGINES`) for ``model`` and ``variables``.

    Raises:
      ValueError: an unknown name (the message lists :data:`ENGINES`).
      ImportError: the engine's runtime is not installed.
    """
    if name == "jax":
        return JaxEngine(model, variables, mesh)
    if name == "onnxruntime":
        return OnnxRuntimeEngine(model, variables)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
