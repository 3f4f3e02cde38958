"""Several hosts, simulated: two processes joined by jax.distributed on localhost (gloo CPU
collectives, 2 fake devices each, each reading its own half of every batch) train exactly like
one process with 4 devices."""

import socket
import subprocess
import sys

import jax
import numpy as np

from gcc_jax.training import create_mesh, create_model, read_metrics, replicated_sharding, restore_params
from tiny_runs import REPO, subprocess_env, tiny_config, tiny_flags

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


def _finish(process, name):
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    assert process.returncode == 0, f"{name} failed:\n{output[-6000:]}"
    return output


def _params(workdir):
    config = tiny_config(**OVERRIDES)
    model = create_model(config)
    sharding = replicated_sharding(create_mesh(jax.devices()[:1]))
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
    params, step = restore_params(workdir, abstract, which="latest")
    assert step == OVERRIDES["num_train_steps"]
    return params


# Two or three train.py processes (start-up, compilation): 1.5–2 minutes on 2 shared cores;
# in the default suite all the same, as the acceptance test of multi-host / exact resume.
def test_two_processes_equal_one_process_with_four_devices(tmp_path):
    port = _free_port()
    multi = [
        _start(tmp_path / "two_hosts", 2, [f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"])
        for i in range(2)
    ]
    single = _start(tmp_path / "one_host", 4)
    outputs = [_finish(p, f"process {i}") for i, p in enumerate(multi)]
    _finish(single, "single process")
    assert "2 process(es), 4 device(s)" in outputs[0]

    two, one = read_metrics(tmp_path / "two_hosts"), read_metrics(tmp_path / "one_host")
    for split, names in (("train", ("loss", "grad_norm")), ("val", ("mae", "rmse", "num_images"))):
        a = [r for r in two if r["split"] == split]
        b = [r for r in one if r["split"] == split]
        assert [r["step"] for r in a] == [r["step"] for r in b] and a
        for name in names:
            np.testing.assert_allclose([r[name] for r in a], [r[name] for r in b], rtol=1e-5, err_msg=f"{split}/{name}")
    assert [r["num_images"] for r in two if r["split"] == "val"][0] == 2  # both processes' images counted

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        _params(tmp_path / "two_hosts"),
        _params(tmp_path / "one_host"),
    )
