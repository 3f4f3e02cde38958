"""Several hosts, simulated: two processes joined by jax.distributed on localhost (gloo CPU
collectives, 2 fake devices each, each reading its own half of every batch) train exactly like
one process with 4 devices, also when one of them is sent SIGTERM and both are started again:
both stop at the same step, save it together and resume from it."""

import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from gcc_jax.runtime import create_mesh, create_model, replicated_sharding, restore_params
from gcc_jax.training import STOPPED_STATUS, create_learning_rate_fn, create_optimizer, create_train_state, read_metrics
from tiny_runs import REPO, subprocess_env, tiny_config, tiny_flags
from tolerances import EPS32

# 16 training images, global batch 4: 4 steps, one epoch; evaluations at steps 0 and 4, a
# checkpoint at step 2 and 4; one validation image per process.
OVERRIDES = {
    "dataset.synthetic.num_train": 16,
    "num_train_steps": 4,
    "checkpoint_every_steps": 2,
}


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir, devices, extra=()):
    args = [sys.executable, "train.py", f"--workdir={workdir}", *tiny_flags(**OVERRIDES), *extra]
    return subprocess.Popen(args, cwd=REPO, env=subprocess_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(processes: dict[str, subprocess.Popen], status: int = 0) -> dict[str, str]:
    """Waits for every process, then fails naming each one that did not exit with ``status``.

    All of them are waited for first: when one host dies, the other usually aborts too, and
    the one that died first holds the reason. A host left waiting at a barrier never ends by
    itself: all of them share one deadline (a normal run takes 1.5–2 minutes on 2 busy cores).
    """
    deadline = time.monotonic() + 480
    outputs = {}
    for name, process in processes.items():
        try:
            outputs[name], _ = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            process.kill()
            outputs[name], _ = process.communicate()
            outputs[name] += "\n(killed: still running after 480 s)"
    failed = [
        f"{name} failed (status {process.returncode}):\n{_failure_excerpt(outputs[name])}"
        for name, process in processes.items()
        if process.returncode != status
    ]
    assert not failed, "\n\n".join(failed)
    return outputs


def _failure_excerpt(output: str) -> str:
    """The lines that say why a process died, then the end of its output.

    A process that aborts (jax.distributed's fatal errors, SIGABRT) ends with a dump of every
    thread's stack, which would push the one line giving the reason out of a plain tail.
    """
    reasons = [line for line in output.splitlines() if line.startswith(("F", "E0", "Fatal", "Traceback", "error:")) or "Error" in line]
    return "\n".join(reasons[:40]) + "\n...\n" + output[-4000:]


def _params(workdir):
    config = tiny_config(**OVERRIDES)
    model = create_model(config)
    sharding = replicated_sharding(create_mesh(jax.devices()[:1]))
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
    params, step = restore_params(workdir, abstract, which="latest")
    assert step == OVERRIDES["num_train_steps"]
    return params


def _initial_params():
    config = tiny_config(**OVERRIDES)
    steps = OVERRIDES["num_train_steps"]
    optimizer = create_optimizer(config.optimizer, create_learning_rate_fn(config.optimizer, steps, steps))
    return create_train_state(config, create_model(config), optimizer, create_mesh(jax.devices()[:1])).params


def _norm(tree):
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))))


# How closely the two runs can agree. Each device runs the same program on the same image in
# both runs; only the all-reduce of the 4 per-device gradients is done in another order (XLA's
# in-process reduction against gloo's), which changes a gradient element by at most
# 3·u·Σ_d |g_d| (u = EPS32 / 2). The step-1 loss is a sum of 4 positive per-device values:
# ≤ 3u ≈ 1.8e-7 apart. Later losses, the gradient norms and the validation errors move with the
# parameter differences, at first order by ‖∇L‖·‖Δθ‖, which the bound below keeps a few orders
# under these values: 1e-5 leaves 50× the first-step bound.
METRIC_RTOL = 1e-5
# The parameters go through Adam, whose step m̂/(√v̂ + ε) is ≈ ±lr whatever |g| is: where the
# per-device gradients of an element (size ~s) cancel to within the reduction's round-off
# δ = 3u·4s, its step can flip sign and the element ends up to 2·lr away, on any CPU. So no
# per-element bound holds. The chance is ~2δ/s = 24u ≈ 1.4e-6 per element and step: about 0.5
# such elements in 4 steps of N = 8.4e4 parameters. All others agree to a few ulps. Each flip
# adds at most 2·lr to ‖Δθ‖, while the run moves θ by ‖θ − θ₀‖ ≈ Σ_t lr_t·√N ≈ 2.5·lr·290
# (cosine schedule over 4 steps). Even 10 flips (20× the expected count) keep
# ‖Δθ‖ / ‖θ − θ₀‖ ≤ 2·lr·√10 / 7e2·lr ≈ 9e-3; a process that trains on the wrong images or does
# not average its gradients is off by O(1).
PARAM_RELATIVE_NORM = 1e-2


# Two or three train.py processes (start-up, compilation): 1.5–2 minutes on 2 shared cores;
# in the default suite all the same, as the acceptance test of multi-host / exact resume.
def test_two_processes_equal_one_process_with_four_devices(tmp_path):
    def start_two_hosts():
        port = _free_port()
        flags = [f"--coordinator_address=localhost:{port}", "--num_processes=2"]
        return [_start(tmp_path / "two_hosts", 2, [*flags, f"--process_id={i}"]) for i in range(2)]

    multi = start_two_hosts()
    single = _start(tmp_path / "one_host", 4)
    # A preemption notice to one host, once the run is under way (its config is written):
    # JAX's preemption service tells the other, both stop after the same step and save it.
    deadline = time.monotonic() + 300
    while not (tmp_path / "two_hosts" / "config.json").exists() and multi[1].poll() is None:
        assert time.monotonic() < deadline, "the two-host run did not start"
        time.sleep(0.05)
    multi[1].send_signal(signal.SIGTERM)
    stopped = _finish({"process 0": multi[0], "process 1": multi[1]}, status=STOPPED_STATUS)
    steps = {name: re.findall(r"^stopped at step (\d+); checkpoint saved", output, re.M) for name, output in stopped.items()}
    assert steps["process 0"] == steps["process 1"] and len(steps["process 0"]) == 1, steps
    step = int(steps["process 0"][0])
    assert 0 < step < OVERRIDES["num_train_steps"]
    assert (tmp_path / "two_hosts" / "checkpoints" / str(step)).is_dir()

    multi = start_two_hosts()
    outputs = _finish({"process 0": multi[0], "process 1": multi[1], "single process": single})
    assert f"resuming from the checkpoint at step {step}" in outputs["process 0"]
    assert "2 process(es), 4 device(s)" in outputs["process 0"]

    two, one = read_metrics(tmp_path / "two_hosts"), read_metrics(tmp_path / "one_host")
    for split, names in (("train", ("loss", "grad_norm")), ("val", ("mae", "rmse", "num_images"))):
        a = [r for r in two if r["split"] == split]
        b = [r for r in one if r["split"] == split]
        assert [r["step"] for r in a] == [r["step"] for r in b] and a  # each step once: one run
        for name in names:
            np.testing.assert_allclose([r[name] for r in a], [r[name] for r in b], rtol=METRIC_RTOL, err_msg=f"{split}/{name}")
    assert [r["num_images"] for r in two if r["split"] == "val"][0] == 2  # both processes' images counted

    start, two_params, one_params = _initial_params(), _params(tmp_path / "two_hosts"), _params(tmp_path / "one_host")
    moved = _norm(jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), one_params, start))
    apart = _norm(jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), two_params, one_params))
    assert moved > 1e3 * EPS32 * _norm(start)  # training moved the parameters
    assert apart <= PARAM_RELATIVE_NORM * moved, (apart, moved)
