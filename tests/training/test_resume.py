"""Kill-and-resume: a run killed with SIGKILL mid-epoch and restarted on its workdir takes
exactly the steps (same losses) of an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time

import numpy as np

from gcc_jax.training import RunCheckpoints, read_metrics
from tiny_runs import REPO, subprocess_env, tiny_flags

# 8 training images, batch 2: 4 steps per epoch; checkpoints every 3 steps land mid-epoch.
OVERRIDES = {
    "dataset.synthetic.num_train": 8,
    "batch_size": 2,
    "num_train_steps": 60,
    "eval_every_epochs": 5,
    "checkpoint_every_steps": 3,
    "max_checkpoints_to_keep": 2,
}
KILL_AFTER_STEP = 7


def _start(workdir):
    args = [sys.executable, "train.py", f"--workdir={workdir}", *tiny_flags(**OVERRIDES)]
    return subprocess.Popen(args, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, name):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"{name} failed:\n{output[-6000:]}"
    return output


def _last_train_step(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if '"split": "train"' in line]
    return max(steps, default=0)


def _train_losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir, "train")}


def test_killed_run_resumes_exactly(tmp_path):
    uninterrupted = _start(tmp_path / "uninterrupted")
    victim = _start(tmp_path / "killed")
    deadline = time.monotonic() + 600
    while _last_train_step(tmp_path / "killed") < KILL_AFTER_STEP:
        assert victim.poll() is None, "the run ended before it could be killed:\n" + victim.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the run did not reach the kill step in time"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    killed_at = _last_train_step(tmp_path / "killed")
    checkpoints = RunCheckpoints(tmp_path / "killed")
    restart_step = checkpoints.latest_step()
    checkpoints.close()
    assert restart_step is not None and 0 < restart_step < OVERRIDES["num_train_steps"]
    assert killed_at < OVERRIDES["num_train_steps"]

    output = _finish(_start(tmp_path / "killed"), "resumed run")
    assert f"resuming from the checkpoint at step {restart_step}" in output
    _finish(uninterrupted, "uninterrupted run")

    expected, resumed = _train_losses(tmp_path / "uninterrupted"), _train_losses(tmp_path / "killed")
    assert sorted(resumed) == sorted(expected) == list(range(1, OVERRIDES["num_train_steps"] + 1))
    steps = sorted(expected)
    np.testing.assert_allclose([resumed[s] for s in steps], [expected[s] for s in steps], rtol=1e-6, atol=1e-7)
    # One curve, as if never interrupted: one step-0 evaluation, no duplicated records.
    records = read_metrics(tmp_path / "killed")
    assert len(records) == len({(r["step"], r["split"]) for r in records})
    assert read_metrics(tmp_path / "killed", "val")[0]["step"] == 0
